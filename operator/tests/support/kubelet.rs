//! A stand-in kubelet for runner pods that no node runs: on a bare control plane (envtest)
//! nothing schedules or starts pods, and on a cluster with nodes the e2e node selector keeps
//! them unscheduled. This runs each such pod's container as a local `ferry-runner` process,
//! with the pod's volumes materialized as directories, and reports the pod's phase and the
//! container's exit in the pod status, as a kubelet would. The operator cannot tell the
//! difference: it reads the same pod status fields.
//!
//! The translation from a pod to a process ([`materialize`]) and the status patches are pure,
//! so they are unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The largest termination message a kubelet keeps (its `MaxContainerTerminationMessageLength`);
/// it keeps the end of a longer file.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// The only program this kubelet runs: the runner image's binary, replaced by the local build.
pub const RUNNER_COMMAND: &str = "ferry-runner";
/// Where a container's termination message goes when it does not say.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// Mode of projected files when neither the item nor the volume sets one (Kubernetes' default).
const DEFAULT_FILE_MODE: u32 = 0o644;

/// The data of the ConfigMaps and Secrets a pod's volumes name, by object name. An object
/// that is absent here does not exist (yet).
#[derive(Clone, Debug, Default)]
pub struct VolumeSources {
    /// ConfigMap name → key → bytes (`data` and `binaryData`).
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Secret name → key → bytes.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The keys and bytes of a ConfigMap, as its volume would show them.
pub fn config_map_data(map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let text = map.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes()));
    let binary = map.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone()));
    text.chain(binary).collect()
}

/// The keys and bytes of a Secret, as its volume would show them.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

/// The ConfigMaps and Secrets a pod's volumes name.
pub fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for volume in pod.spec.iter().flat_map(|spec| spec.volumes.iter().flatten()) {
        if let Some(source) = &volume.config_map {
            config_maps.insert(source.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|source| source.secret_name.clone()) {
            secrets.insert(name);
        }
    }
    (config_maps, secrets)
}

/// A file to write before the container starts.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalFile {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub contents: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
}

/// A pod's container, translated into a local process.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalContainer {
    /// The container's name (for its status).
    pub name: String,
    /// The container's image (for its status).
    pub image: String,
    /// The program: the local runner binary.
    pub program: PathBuf,
    /// `command[1..]` then `args`, with paths inside mounts rewritten to local directories.
    pub args: Vec<String>,
    /// The whole environment of the process (nothing is inherited from the test).
    pub env: Vec<(String, String)>,
    /// Directories to create: one per volume.
    pub directories: Vec<PathBuf>,
    /// Files to write: the ConfigMap and Secret volumes' projections.
    pub files: Vec<LocalFile>,
    /// The local file standing in for the container's termination message path.
    pub termination_log: PathBuf,
}

/// Why a pod cannot be run (yet).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MaterializeError {
    /// A ConfigMap or Secret (or a key in it) the pod needs does not exist yet; a kubelet
    /// keeps such a pod in ContainerCreating and tries again.
    #[error("waiting for {0}")]
    Missing(String),
    /// The pod uses something this stand-in does not implement.
    #[error("unsupported by the e2e kubelet: {0}")]
    Unsupported(String),
}

/// `relative` inside `directory`; refuses absolute paths and `..`, as the kubelet does.
fn inside(directory: &Path, relative: &str) -> Result<PathBuf, MaterializeError> {
    let path = Path::new(relative);
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if relative.is_empty() || !normal {
        return Err(MaterializeError::Unsupported(format!("path {relative:?} must be relative and without ..")));
    }
    Ok(directory.join(path))
}

/// The files a ConfigMap or Secret volume shows: the listed `items` (key → path), or every key.
fn project(
    directory: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Vec<LocalFile>, MaterializeError> {
    let default_mode = default_mode.map_or(DEFAULT_FILE_MODE, |m| m as u32);
    match items.filter(|items| !items.is_empty()) {
        Some(items) => items
            .iter()
            .map(|item| {
                let contents = data
                    .get(&item.key)
                    .ok_or_else(|| MaterializeError::Missing(format!("key {} in {what}", item.key)))?;
                Ok(LocalFile {
                    path: inside(directory, &item.path)?,
                    contents: contents.clone(),
                    mode: item.mode.map_or(default_mode, |m| m as u32),
                })
            })
            .collect(),
        None => data
            .iter()
            .map(|(key, contents)| {
                Ok(LocalFile { path: inside(directory, key)?, contents: contents.clone(), mode: default_mode })
            })
            .collect(),
    }
}

/// `value` with a leading mount path (longest first, on a component boundary) replaced by
/// the mount's local directory, and the termination message path by its local file.
fn rewrite_path(value: &str, mounts: &[(String, PathBuf)], termination: (&str, &Path)) -> String {
    if value == termination.0 {
        return termination.1.display().to_string();
    }
    mounts
        .iter()
        .filter_map(|(mount, local)| {
            let rest = value.strip_prefix(mount.as_str())?;
            let rest = if rest.is_empty() { Some("") } else { rest.strip_prefix('/') }?;
            Some((mount.len(), if rest.is_empty() { local.clone() } else { local.join(rest) }))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| value.to_owned(), |(_, local)| local.display().to_string())
}

/// One argument rewritten: a bare path, or the value of `--flag=path`.
fn rewrite_argument(argument: &str, mounts: &[(String, PathBuf)], termination: (&str, &Path)) -> String {
    match argument.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => format!("{flag}={}", rewrite_path(value, mounts, termination)),
        _ => rewrite_path(argument, mounts, termination),
    }
}

/// Translates the pod's single container into a local process rooted at `root`: volumes
/// become `root/volumes/<name>`, the termination message path `root/termination-log`, and
/// `ferry-runner` the local `runner` binary.
pub fn materialize(
    pod: &Pod,
    sources: &VolumeSources,
    root: &Path,
    runner: &Path,
) -> Result<LocalContainer, MaterializeError> {
    let unsupported = |what: String| MaterializeError::Unsupported(what);
    let spec = pod.spec.as_ref().ok_or_else(|| unsupported("a pod without a spec".into()))?;
    let [container] = spec.containers.as_slice() else {
        return Err(unsupported(format!("{} containers (one is supported)", spec.containers.len())));
    };
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(unsupported("init containers".into()));
    }

    let mut directories = Vec::new();
    let mut files = Vec::new();
    let mut volume_directories = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let directory = inside(&root.join("volumes"), &volume.name)?;
        if let Some(source) = &volume.config_map {
            match sources.config_maps.get(&source.name) {
                Some(data) => files.extend(project(
                    &directory,
                    data,
                    source.items.as_ref(),
                    source.default_mode,
                    &format!("ConfigMap {}", source.name),
                )?),
                None if source.optional == Some(true) => {}
                None => return Err(MaterializeError::Missing(format!("ConfigMap {}", source.name))),
            }
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            match sources.secrets.get(&name) {
                Some(data) => files.extend(project(
                    &directory,
                    data,
                    source.items.as_ref(),
                    source.default_mode,
                    &format!("Secret {name}"),
                )?),
                None if source.optional == Some(true) => {}
                None => return Err(MaterializeError::Missing(format!("Secret {name}"))),
            }
        } else if volume.empty_dir.is_none() && volume.persistent_volume_claim.is_none() {
            return Err(unsupported(format!(
                "volume {}: only configMap, secret, emptyDir and persistentVolumeClaim volumes",
                volume.name
            )));
        }
        directories.push(directory.clone());
        volume_directories.insert(volume.name.clone(), directory);
    }

    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let directory = volume_directories
            .get(&mount.name)
            .ok_or_else(|| unsupported(format!("mount of an undeclared volume {}", mount.name)))?;
        let local = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub_path) => inside(directory, sub_path)?,
            None => directory.clone(),
        };
        let path = mount.mount_path.trim_end_matches('/');
        if path.is_empty() {
            return Err(unsupported(format!("mount of {} at /", mount.name)));
        }
        mounts.push((path.to_owned(), local));
    }

    let termination_path = container.termination_message_path.as_deref().unwrap_or(DEFAULT_TERMINATION_PATH);
    let termination_log = root.join("termination-log");
    let termination = (termination_path, termination_log.as_path());
    let command = container.command.as_deref().unwrap_or_default();
    let Some((program, command_args)) = command.split_first() else {
        return Err(unsupported("no command: the image's entrypoint is unknown here".into()));
    };
    if program != RUNNER_COMMAND {
        return Err(unsupported(format!("command {program:?} (only {RUNNER_COMMAND} runs here)")));
    }
    let args = command_args
        .iter()
        .chain(container.args.iter().flatten())
        .map(|argument| rewrite_argument(argument, &mounts, termination))
        .collect();

    let mut env = Vec::new();
    for variable in container.env.iter().flatten() {
        match (&variable.value, &variable.value_from) {
            (_, Some(_)) => return Err(unsupported(format!("env {} from a reference", variable.name))),
            (value, None) => env.push((variable.name.clone(), value.clone().unwrap_or_default())),
        }
    }
    let mut add_default = |name: &str, value: String| {
        if env.iter().all(|(existing, _)| existing != name) {
            env.push((name.to_owned(), value));
        }
    };
    add_default("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    // Temporary files go where the pod's /tmp volume is, not to the host's /tmp.
    if let Some((_, local)) = mounts.iter().find(|(path, _)| path == "/tmp") {
        add_default("TMPDIR", local.display().to_string());
    }

    Ok(LocalContainer {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        program: runner.to_path_buf(),
        args,
        env,
        directories,
        files,
        termination_log,
    })
}

/// What a kubelet reads from the termination message file: its last 4096 bytes.
pub fn termination_message(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_TERMINATION_MESSAGE);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A process's exit as a container's exit code: `128 + signal` when it was killed.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The status patch for a started container.
pub fn running_patch(name: &str, image: &str, started_at: &str) -> Value {
    json!({"status": {
        "phase": "Running",
        "startTime": started_at,
        "containerStatuses": [{
            "name": name, "image": image, "imageID": "", "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": started_at}}
        }]
    }})
}

/// The status patch for a container that ended with `exit_code` (or never started, with
/// `reason` `StartError`), the termination message as its `message`.
pub fn terminated_patch(
    name: &str,
    image: &str,
    exit_code: i32,
    reason: Option<&str>,
    message: &str,
    started_at: &str,
    finished_at: &str,
) -> Value {
    let reason = reason.unwrap_or(if exit_code == 0 { "Completed" } else { "Error" });
    json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": [{
            "name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {
                "exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": started_at, "finishedAt": finished_at
            }}
        }]
    }})
}

fn now() -> String {
    // Kubernetes' Time is RFC 3339 with whole seconds.
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What the kubelet did, for the test's assertions and for diagnostics on failure.
#[derive(Clone, Debug, Default)]
pub struct KubeletRecord {
    /// The data of every Secret it mounted into a runner, by Secret name.
    pub mounted_secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The data of every ConfigMap it mounted into a runner, by ConfigMap name.
    pub mounted_config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The files each started pod's volumes showed its runner, relative to the pod's root
    /// (such as `volumes/credentials/source-token`), by pod name. Paths only, never contents.
    pub projected_files: BTreeMap<String, BTreeSet<String>>,
    /// Every pod it ever listed: name → the UIDs seen under that name (two UIDs: the pod was
    /// deleted and created again).
    pub seen: BTreeMap<String, BTreeSet<String>>,
    /// The pods it started, by name.
    pub started: Vec<String>,
    /// Pods whose runner it killed because the pod was deleted.
    pub stopped: BTreeSet<String>,
    /// Pods whose runner it killed on the test's request ([`LocalKubelet::kill`]).
    pub killed: BTreeSet<String>,
    /// Each pod's exit code, by name.
    pub exits: BTreeMap<String, i32>,
    /// The runners' combined stdout and stderr, one file per pod.
    pub logs: Vec<PathBuf>,
    /// Pods a real kubelet runs (they have a node), left alone.
    pub scheduled_elsewhere: BTreeSet<String>,
    /// Problems, newest last.
    pub errors: Vec<String>,
}

impl KubeletRecord {
    /// What it did, for a panic message: never a Secret's value.
    pub fn summary(&self) -> String {
        format!(
            "started {:?}; exits {:?}; killed on request {:?}; stopped with their pods {:?}; pods seen (name: UIDs) \
             {:?}; scheduled elsewhere {:?}; errors {:?}",
            self.started,
            self.exits,
            self.killed,
            self.stopped,
            self.seen.iter().map(|(name, uids)| (name.as_str(), uids.len())).collect::<BTreeMap<_, _>>(),
            self.scheduled_elsewhere,
            self.errors
        )
    }
}

/// What the test asks of the running kubelet.
#[derive(Debug, Default)]
struct Control {
    /// Pods not to start yet, by name (as if their image were still being pulled).
    held: BTreeSet<String>,
    /// Pod name → the switch that SIGKILLs its running runner.
    kill_switches: HashMap<String, oneshot::Sender<()>>,
}

/// Runs the pods matching a label selector until dropped; then every runner it started is killed.
pub struct LocalKubelet {
    task: tokio::task::JoinHandle<()>,
    record: Arc<Mutex<KubeletRecord>>,
    control: Arc<Mutex<Control>>,
}

impl LocalKubelet {
    /// Starts watching (by polling every second) the pods in `namespace` matching `selector`.
    pub fn start(client: kube::Client, namespace: &str, selector: String, runner: PathBuf, root: PathBuf) -> Self {
        Self::start_holding(client, namespace, selector, runner, root, &[])
    }

    /// As [`Self::start`], with the pods named in `held` held from the first pass (for pods
    /// that exist already, which [`Self::hold`] would race with).
    pub fn start_holding(
        client: kube::Client,
        namespace: &str,
        selector: String,
        runner: PathBuf,
        root: PathBuf,
        held: &[&str],
    ) -> Self {
        let record = Arc::new(Mutex::new(KubeletRecord::default()));
        let held = held.iter().map(|pod| (*pod).to_owned()).collect();
        let control = Arc::new(Mutex::new(Control { held, ..Control::default() }));
        let kubelet = Kubelet {
            pods: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            selector,
            runner,
            root,
            record: record.clone(),
            control: control.clone(),
        };
        Self { task: tokio::spawn(kubelet.run()), record, control }
    }

    /// A copy of what it has done so far.
    pub fn record(&self) -> KubeletRecord {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Leaves the pod named `pod` Pending (not started) until [`Self::release`]; call it
    /// before the pod exists.
    pub fn hold(&self, pod: &str) {
        if let Ok(mut control) = self.control.lock() {
            control.held.insert(pod.to_owned());
        }
    }

    /// Lets a held pod start.
    pub fn release(&self, pod: &str) {
        if let Ok(mut control) = self.control.lock() {
            control.held.remove(pod);
        }
    }

    /// SIGKILLs the runner of the running pod `pod`, as the OOM killer or a node's crash
    /// would: the pod ends `Failed` with exit code 137 (`128 + 9`), reason `Error`, and the
    /// termination message the runner had written so far.
    pub fn kill(&self, pod: &str) -> Result<(), String> {
        let switch = self.control.lock().map_err(|e| e.to_string())?.kill_switches.remove(pod);
        let switch = switch.ok_or_else(|| format!("pod {pod} has no running runner here"))?;
        switch.send(()).map_err(|()| format!("the runner of pod {pod} has already exited"))
    }
}

impl Drop for LocalKubelet {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which drops every runner's Child: kill_on_drop.
        self.task.abort();
    }
}

struct Kubelet {
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    selector: String,
    runner: PathBuf,
    root: PathBuf,
    record: Arc<Mutex<KubeletRecord>>,
    control: Arc<Mutex<Control>>,
}

impl Kubelet {
    fn note(&self, change: impl FnOnce(&mut KubeletRecord)) {
        if let Ok(mut record) = self.record.lock() {
            change(&mut record);
        }
    }

    fn error(&self, message: String) {
        // A pod waiting for its volumes says so once, not every second.
        self.note(|r| {
            if r.errors.last() != Some(&message) {
                eprintln!("e2e kubelet: {message}");
                r.errors.push(message);
            }
        });
    }

    async fn run(self) {
        let mut runners = JoinSet::new();
        // Pod UID → the sender that stops its runner (dropped or sent: the runner is killed).
        let mut running: HashMap<String, oneshot::Sender<()>> = HashMap::new();
        let mut handled = BTreeSet::new();
        loop {
            while runners.try_join_next().is_some() {}
            match self.pods.list(&ListParams::default().labels(&self.selector)).await {
                Err(error) => self.error(format!("cannot list pods: {error}")),
                Ok(list) => {
                    let live: BTreeSet<String> = list
                        .items
                        .iter()
                        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                        .filter_map(|pod| pod.metadata.uid.clone())
                        .collect();
                    // A deleted pod's container is stopped, as a kubelet stops it.
                    running.retain(|uid, stop| live.contains(uid) && !stop.is_closed());
                    for pod in &list.items {
                        let (Some(uid), Some(name)) = (&pod.metadata.uid, &pod.metadata.name) else { continue };
                        self.note(|r| {
                            r.seen.entry(name.clone()).or_default().insert(uid.clone());
                        });
                        if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                            self.note(|r| {
                                r.scheduled_elsewhere.insert(name.clone());
                            });
                            continue;
                        }
                        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                        // Only pods nobody has started; a finished one is never run again.
                        if handled.contains(uid) || !live.contains(uid) || !matches!(phase, None | Some("Pending")) {
                            continue;
                        }
                        if self.control.lock().is_ok_and(|control| control.held.contains(name)) {
                            continue;
                        }
                        match self.start_pod(pod, name, &mut runners).await {
                            Ok(stop) => {
                                handled.insert(uid.clone());
                                running.insert(uid.clone(), stop);
                            }
                            Err(StartFailure::NotYet(why)) => self.error(format!("pod {name}: {why}")),
                            Err(StartFailure::Failed(why)) => {
                                handled.insert(uid.clone());
                                self.error(format!("pod {name}: {why}"));
                                let (container, image) = container_identity(pod);
                                let patch =
                                    terminated_patch(&container, &image, 128, Some("StartError"), &why, &now(), &now());
                                patch_status(&self.pods, name, &patch).await;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn fetch_sources(&self, pod: &Pod) -> Result<VolumeSources, kube::Error> {
        let (config_maps, secrets) = referenced_objects(pod);
        let mut sources = VolumeSources::default();
        for name in config_maps {
            if let Some(map) = self.config_maps.get_opt(&name).await? {
                sources.config_maps.insert(name, config_map_data(&map));
            }
        }
        for name in secrets {
            if let Some(secret) = self.secrets.get_opt(&name).await? {
                sources.secrets.insert(name, secret_data(&secret));
            }
        }
        Ok(sources)
    }

    async fn start_pod(
        &self,
        pod: &Pod,
        name: &str,
        runners: &mut JoinSet<()>,
    ) -> Result<oneshot::Sender<()>, StartFailure> {
        let sources = self.fetch_sources(pod).await.map_err(|e| StartFailure::NotYet(e.to_string()))?;
        let root = inside(&self.root, name).map_err(|e| StartFailure::Failed(e.to_string()))?;
        let container = materialize(pod, &sources, &root, &self.runner).map_err(|error| match error {
            MaterializeError::Missing(_) => StartFailure::NotYet(error.to_string()),
            MaterializeError::Unsupported(_) => StartFailure::Failed(error.to_string()),
        })?;
        write_volumes(&container).map_err(|e| StartFailure::Failed(format!("cannot write the volumes: {e}")))?;
        let log = root.join("runner.log");
        let output = std::fs::File::create(&log).map_err(|e| StartFailure::Failed(format!("{log:?}: {e}")))?;
        let errors = output.try_clone().map_err(|e| StartFailure::Failed(format!("{log:?}: {e}")))?;
        let files = container.files.iter().filter_map(|f| f.path.strip_prefix(&root).ok());
        let files: BTreeSet<String> = files.map(|path| path.display().to_string()).collect();
        self.note(|r| {
            r.mounted_secrets.extend(sources.secrets.clone());
            r.mounted_config_maps.extend(sources.config_maps.clone());
            r.projected_files.insert(name.to_owned(), files);
            r.logs.push(log.clone());
        });

        let started_at = now();
        let running = running_patch(&container.name, &container.image, &started_at);
        self.pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&running))
            .await
            .map_err(|e| StartFailure::NotYet(format!("cannot mark the pod Running: {e}")))?;
        let child = tokio::process::Command::new(&container.program)
            .args(&container.args)
            // A pod sees only its own environment: nothing of the test's (no VAULT_TOKEN, no
            // AWS_CA_BUNDLE) may make a runner work here that would fail in a cluster.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(container.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors))
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                let why = format!("cannot start {}: {error}", container.program.display());
                return Err(StartFailure::Failed(why));
            }
        };
        self.note(|r| r.started.push(name.to_owned()));

        let (stop, stopped) = oneshot::channel::<()>();
        let (kill, mut killed) = oneshot::channel::<()>();
        if let Ok(mut control) = self.control.lock() {
            control.kill_switches.insert(name.to_owned(), kill);
        }
        let pods = self.pods.clone();
        let record = self.record.clone();
        let control = self.control.clone();
        let name = name.to_owned();
        runners.spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                Ok(()) = &mut killed => {
                    if let Ok(mut record) = record.lock() {
                        record.killed.insert(name.clone());
                    }
                    // SIGKILL; the exit is then reported like any other (137).
                    let _ = child.start_kill();
                    child.wait().await
                }
                _ = stopped => {
                    let _ = child.kill().await;
                    if let Ok(mut record) = record.lock() {
                        record.stopped.insert(name.clone());
                    }
                    return;
                }
            };
            if let Ok(mut control) = control.lock() {
                control.kill_switches.remove(&name);
            }
            let code = match status {
                Ok(status) => exit_code(status),
                Err(_) => 128,
            };
            let message =
                std::fs::read(&container.termination_log).map(|b| termination_message(&b)).unwrap_or_default();
            if let Ok(mut record) = record.lock() {
                record.exits.insert(name.clone(), code);
            }
            let patch = terminated_patch(&container.name, &container.image, code, None, &message, &started_at, &now());
            patch_status(&pods, &name, &patch).await;
        });
        Ok(stop)
    }
}

/// The name and image of a pod's (first) container, for its status.
fn container_identity(pod: &Pod) -> (String, String) {
    let container = pod.spec.as_ref().and_then(|spec| spec.containers.first());
    (
        container.map_or_else(|| "runner".to_owned(), |c| c.name.clone()),
        container.and_then(|c| c.image.clone()).unwrap_or_default(),
    )
}

enum StartFailure {
    /// Try again on the next pass.
    NotYet(String),
    /// The pod failed to start: report it as failed.
    Failed(String),
}

/// Creates the volume directories and writes the projected files with their modes.
fn write_volumes(container: &LocalContainer) -> std::io::Result<()> {
    for directory in &container.directories {
        std::fs::create_dir_all(directory)?;
    }
    for file in &container.files {
        if let Some(parent) = file.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file.path, &file.contents)?;
        std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(file.mode))?;
    }
    if let Some(parent) = container.termination_log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&container.termination_log, b"")
}

/// Patches a pod's status, retrying briefly; a pod that is gone needs no status.
async fn patch_status(pods: &Api<Pod>, name: &str, patch: &Value) {
    for _ in 0..10 {
        match pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.is_not_found() => return,
            Err(error) => {
                eprintln!("e2e kubelet: cannot patch the status of pod {name}: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use ferry_api::contract::{JobIdentity, Outcome, PlannedBinding, ProgressReport, Shard, Stage};
    use ferry_api::{MigrationJob, Progress};
    use ferry_operator::children::credentials::{ShardTokens, secret};
    use ferry_operator::children::network_policy::EgressTarget;
    use ferry_operator::children::pod::runner_pod;
    use ferry_operator::children::{Attempt, RunnerEnvironment, plan};
    use ferry_operator::lifecycle::ShardState;
    use zeroize::Zeroizing;

    use super::*;

    const ROOT: &str = "/work/pod";
    const RUNNER: &str = "/build/ferry-runner";

    fn job() -> MigrationJob {
        serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: copy, namespace: e2e, uid: u-9}\n\
             spec:\n  source: {binding: src}\n  destination: {binding: dst}\n  shards: 3\n",
        )
        .unwrap()
    }

    fn binding(name: &str, spec: &str) -> PlannedBinding {
        PlannedBinding {
            name: name.into(),
            spec: serde_yaml::from_str(spec).unwrap(),
            secret_creation_path: Some(format!("secret/data/tenants/e2e/{name}")),
            secret_fields: Vec::new(),
            rotation_creation_path: None,
        }
    }

    fn attempt(job: &MigrationJob) -> Attempt<'_> {
        Attempt {
            job,
            identity: JobIdentity { namespace: "e2e".into(), name: "copy".into(), uid: "u-9".into() },
            attempt: 1,
            source: binding("src", "provider: s3\ns3: {bucket: source}\nvault: {path: tenants/e2e/s3}"),
            // A PVC-backed destination, so a claim volume is part of the pod too.
            destination: binding("dst", "provider: fs\nfs: {root: /data, claimName: archive}"),
            credentials_expire_at: None,
            deadline_seconds: None,
        }
    }

    fn environment() -> RunnerEnvironment {
        RunnerEnvironment {
            image: "ferry-runner:e2e".into(),
            progress_url: "https://127.0.0.1:9443".into(),
            vault_address: Some("http://127.0.0.1:8200".into()),
            progress_ca_pem: Some("-----BEGIN CERTIFICATE-----\nMII\n".into()),
            vault_ca_pem: None,
            vault_egress: vec![EgressTarget { cidr: "127.0.0.1/32".into(), port: 8200 }],
            progress_egress: vec![EgressTarget { cidr: "127.0.0.1/32".into(), port: 9443 }],
            ..RunnerEnvironment::default()
        }
    }

    /// The ConfigMap and Secret the operator would apply for the attempt.
    fn attempt_objects(attempt: &Attempt<'_>, environment: &RunnerEnvironment) -> (ConfigMap, Secret) {
        let documents = plan::plan_documents(attempt, environment).unwrap();
        let shards: Vec<ShardTokens> = documents
            .iter()
            .enumerate()
            .map(|(index, document)| ShardTokens {
                source: Some(Zeroizing::new(format!("s.source-{index}"))),
                destination: Some(Zeroizing::new(format!("s.destination-{index}"))),
                source_write: None,
                destination_write: None,
                progress: Zeroizing::new(format!("progress-{index}")),
                plan_digest: ferry_api::contract::plan_digest(document.as_bytes()),
            })
            .collect();
        let accessors = vec!["accessor".to_owned()];
        (plan::config_map(attempt, environment, &documents), secret(attempt, &shards, &accessors))
    }

    /// Shard 1's pod and the ConfigMap and Secret the operator would have applied with it.
    fn pod_and_sources() -> (Pod, VolumeSources) {
        let job = job();
        let attempt = attempt(&job);
        let environment = environment();
        let pod = runner_pod(&attempt, &environment, 1);
        let (map, secret) = attempt_objects(&attempt, &environment);
        let sources = VolumeSources {
            config_maps: BTreeMap::from([(map.metadata.name.clone().unwrap(), config_map_data(&map))]),
            secrets: BTreeMap::from([(secret.metadata.name.clone().unwrap(), secret_data(&secret))]),
        };
        (pod, sources)
    }

    fn local(path: &str) -> String {
        format!("{ROOT}/{path}")
    }

    #[test]
    fn a_runner_pod_becomes_a_local_runner_process() {
        let (pod, sources) = pod_and_sources();
        assert_eq!(
            referenced_objects(&pod),
            (BTreeSet::from(["ferry-copy-a1".into()]), BTreeSet::from(["ferry-copy-a1".into()]))
        );
        let container = materialize(&pod, &sources, Path::new(ROOT), Path::new(RUNNER)).unwrap();

        assert_eq!(container.program, Path::new(RUNNER));
        assert_eq!(
            container.args,
            [
                "cluster".to_owned(),
                format!("--plan={}", local("volumes/plan/plan.json")),
                format!("--credentials={}", local("volumes/credentials")),
                format!("--spool-dir={}", local("volumes/spool")),
                format!("--termination-log={}", local("termination-log")),
                format!("--progress-ca={}", local("volumes/plan/progress-ca.pem")),
            ]
        );
        assert_eq!(container.termination_log, Path::new(&local("termination-log")));
        assert_eq!((container.name.as_str(), container.image.as_str()), ("runner", "ferry-runner:e2e"));

        // Only the pod's own shard plan is projected, under the name the runner is given.
        let files: BTreeMap<String, (&[u8], u32)> = container
            .files
            .iter()
            .map(|f| (f.path.strip_prefix(ROOT).unwrap().display().to_string(), (f.contents.as_slice(), f.mode)))
            .collect();
        let keys: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "volumes/credentials/destination-token",
                "volumes/credentials/plan-digest",
                "volumes/credentials/progress-token",
                "volumes/credentials/source-token",
                "volumes/plan/plan.json",
                "volumes/plan/progress-ca.pem",
            ]
        );
        let plan: ferry_api::contract::RunnerPlan = serde_json::from_slice(files["volumes/plan/plan.json"].0).unwrap();
        assert_eq!(plan.shard, Shard { index: 1, count: 3 });
        assert_eq!(files["volumes/credentials/source-token"], (&b"s.source-1"[..], 0o440), "shard 1's own token");
        let digest = ferry_api::contract::plan_digest(files["volumes/plan/plan.json"].0);
        assert_eq!(files["volumes/credentials/plan-digest"].0, digest.as_bytes());
        assert_eq!(files["volumes/plan/plan.json"].1, 0o644);

        let directories: Vec<String> = container.directories.iter().map(|d| d.display().to_string()).collect();
        for volume in ["plan", "credentials", "spool", "tmp", "destination-data"] {
            assert!(directories.contains(&local(&format!("volumes/{volume}"))), "{volume}: {directories:?}");
        }
        let env: BTreeMap<_, _> = container.env.iter().cloned().collect();
        assert_eq!(env["FERRY_LOG"], "info");
        assert_eq!(env["TMPDIR"], local("volumes/tmp"));
        assert_eq!(env["HOSTNAME"], "ferry-copy-a1-s1");
        assert!(!env.contains_key("VAULT_TOKEN"));
    }

    #[test]
    fn a_pod_waits_for_its_config_map_secret_and_keys() {
        let (pod, sources) = pod_and_sources();
        let root = Path::new(ROOT);
        let runner = Path::new(RUNNER);
        let without_secret = VolumeSources { secrets: BTreeMap::new(), ..sources.clone() };
        assert_eq!(
            materialize(&pod, &without_secret, root, runner),
            Err(MaterializeError::Missing("Secret ferry-copy-a1".into()))
        );
        let mut without_plan = sources.clone();
        without_plan.config_maps.values_mut().for_each(|data| {
            data.remove("plan-1.json");
        });
        let error = materialize(&pod, &without_plan, root, runner).unwrap_err();
        assert_eq!(error, MaterializeError::Missing("key plan-1.json in ConfigMap ferry-copy-a1".into()));
        assert!(materialize(&pod, &VolumeSources::default(), root, runner).is_err());
    }

    #[test]
    fn what_a_runner_pod_never_has_is_refused() {
        let (pod, sources) = pod_and_sources();
        let refuse = |change: &dyn Fn(&mut Pod)| {
            let mut pod = pod.clone();
            change(&mut pod);
            match materialize(&pod, &sources, Path::new(ROOT), Path::new(RUNNER)) {
                Err(MaterializeError::Unsupported(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        fn container(pod: &mut Pod) -> &mut k8s_openapi::api::core::v1::Container {
            &mut pod.spec.as_mut().unwrap().containers[0]
        }
        assert!(refuse(&|p| container(p).command = Some(vec!["sh".into()])).contains("\"sh\""));
        assert!(refuse(&|p| container(p).command = None).contains("entrypoint"));
        assert!(
            refuse(&|p| container(p).env.as_mut().unwrap()[0].value_from = Some(Default::default()))
                .contains("FERRY_LOG")
        );
        let traversal = |p: &mut Pod| {
            let volumes = p.spec.as_mut().unwrap().volumes.as_mut().unwrap();
            volumes[0].config_map.as_mut().unwrap().items.as_mut().unwrap()[0].path = "../../etc/passwd".into();
        };
        assert!(refuse(&traversal).contains("without .."));
    }

    #[test]
    fn only_whole_mount_paths_are_rewritten() {
        let mounts = vec![
            ("/etc/ferry/plan".to_owned(), PathBuf::from("/l/plan")),
            ("/etc/ferry".to_owned(), PathBuf::from("/l/etc")),
            ("/spool".to_owned(), PathBuf::from("/l/spool")),
        ];
        let termination = ("/dev/termination-log", Path::new("/l/term"));
        let rewrite = |argument: &str| rewrite_argument(argument, &mounts, termination);
        assert_eq!(rewrite("--plan=/etc/ferry/plan/plan.json"), "--plan=/l/plan/plan.json");
        assert_eq!(rewrite("/etc/ferry/other"), "/l/etc/other");
        assert_eq!(rewrite("/etc/ferry/plan2/x"), "/l/etc/plan2/x");
        assert_eq!(rewrite("/spoolish"), "/spoolish");
        assert_eq!(rewrite("--spool-dir=/spool"), "--spool-dir=/l/spool");
        assert_eq!(rewrite("/dev/termination-log"), "/l/term");
        assert_eq!(rewrite("cluster"), "cluster");
        assert_eq!(rewrite("key=/spool"), "key=/spool");
    }

    #[test]
    fn the_operator_reads_the_status_this_kubelet_writes() {
        let (mut pod, _) = pod_and_sources();
        let report = ProgressReport {
            job_uid: "u-9".into(),
            attempt: 1,
            shard: Shard { index: 1, count: 3 },
            sequence: 4,
            stage: Stage::Finished,
            progress: Progress { objects_total: 3, objects_verified: 3, ..Progress::default() },
            recent_failures: Vec::new(),
            outcome: Some(Outcome::Succeeded),
            deletions: None,
            report_objects: None,
        };
        let message = termination_message(serde_json::to_string(&report).unwrap().as_bytes());
        let at = "2026-01-01T00:00:00Z";
        let patch = terminated_patch("runner", "ferry-runner:e2e", 0, None, &message, at, at);
        pod.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        let states = ferry_operator::observe::shard_states(&[pod.clone()], 2, &BTreeMap::new());
        assert_eq!(states[1], ShardState::Succeeded { report: Some(report) });

        let failed = terminated_patch("runner", "i", 137, None, "", at, at);
        assert_eq!(failed["status"]["phase"], "Failed");
        assert_eq!(failed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Error");
        pod.status = Some(serde_json::from_value(failed["status"].clone()).unwrap());
        let states = ferry_operator::observe::shard_states(&[pod.clone()], 2, &BTreeMap::new());
        assert!(matches!(&states[1], ShardState::Failed { reason, .. } if reason.contains("137")), "{states:?}");

        pod.status = Some(serde_json::from_value(running_patch("runner", "i", at)["status"].clone()).unwrap());
        assert_eq!(ferry_operator::observe::shard_states(&[pod], 2, &BTreeMap::new())[1], ShardState::Running);
    }

    #[test]
    fn exits_and_messages_are_read_as_a_kubelet_reads_them() {
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
        let long = format!("{}{}", "a".repeat(10), "b".repeat(MAX_TERMINATION_MESSAGE));
        assert_eq!(termination_message(long.as_bytes()), "b".repeat(MAX_TERMINATION_MESSAGE));
        assert_eq!(termination_message(b"short"), "short");
    }

    /// A stand-in runner: checks what a runner pod would see, records its arguments in its
    /// /tmp volume, then exits as its pod's name says (shard 0 succeeds, shard 1 fails, a pod
    /// shard 2 sleeps until killed).
    const FAKE_RUNNER: &str = r#"#!/bin/sh
for a in "$@"; do
  case "$a" in
    --plan=*) plan="${a#--plan=}" ;;
    --credentials=*) credentials="${a#--credentials=}" ;;
    --termination-log=*) termination="${a#--termination-log=}" ;;
  esac
done
echo "$@" > "$TMPDIR/args"
test -s "$plan" || exit 11
test "$(cat "$credentials/progress-token")" = "progress-${HOSTNAME##*-s}" || exit 12
test -z "$VAULT_TOKEN" || exit 13
case "$HOSTNAME" in
  *-s0) printf 'final report of %s' "$HOSTNAME" > "$termination"; exit 0 ;;
  *-s1) printf 'gave up' > "$termination"; exit 3 ;;
  *) echo $$ > "$TMPDIR/pid"; exec sleep 30 ;;
esac
"#;

    /// A fake API server holding shard `shards`' pods of the attempt, with its ConfigMap and Secret.
    fn fake_cluster(shards: &[u32]) -> (kube::Client, crate::support::fake_api::FakeCluster) {
        let (client, cluster) = crate::support::fake_api::FakeCluster::start();
        let job = job();
        let attempt = attempt(&job);
        let environment = environment();
        let (map, secret) = attempt_objects(&attempt, &environment);
        cluster.insert("configmaps", serde_json::to_value(map).unwrap());
        cluster.insert("secrets", serde_json::to_value(secret).unwrap());
        for shard in shards {
            cluster.insert("pods", serde_json::to_value(runner_pod(&attempt, &environment, *shard)).unwrap());
        }
        (client, cluster)
    }

    fn fake_runner(directory: &Path) -> PathBuf {
        let path = directory.join("ferry-runner");
        std::fs::write(&path, FAKE_RUNNER).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Waits until `check` holds, for at most 20 s.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !check() {
            assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_run_as_local_processes_and_their_exits_become_pod_status() {
        let (client, cluster) = fake_cluster(&[0, 1]);
        let directory = tempfile::tempdir().unwrap();
        let runner = fake_runner(directory.path());
        let root = directory.path().join("pods");
        let kubelet = LocalKubelet::start(client, "e2e", "ferry.dev/job=copy".into(), runner, root.clone());
        let phase = |name: &str| cluster.get("pods", "e2e", name).map(|pod| pod["status"]["phase"].clone());
        eventually("both pods to finish", || {
            phase("ferry-copy-a1-s0") == Some(json!("Succeeded")) && phase("ferry-copy-a1-s1") == Some(json!("Failed"))
        })
        .await;

        let succeeded = cluster.get("pods", "e2e", "ferry-copy-a1-s0").unwrap();
        let container = &succeeded["status"]["containerStatuses"][0];
        assert_eq!(container["name"], "runner");
        assert_eq!(container["image"], "ferry-runner:e2e");
        let terminated = &container["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 0);
        assert_eq!(terminated["reason"], "Completed");
        assert_eq!(terminated["message"], "final report of ferry-copy-a1-s0");
        let failed = cluster.get("pods", "e2e", "ferry-copy-a1-s1").unwrap();
        let terminated = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(3), json!("Error")));
        assert_eq!(terminated["message"], "gave up");

        let pod_root = root.join("ferry-copy-a1-s0");
        let args = std::fs::read_to_string(pod_root.join("volumes/tmp/args")).unwrap();
        let plan = pod_root.join("volumes/plan/plan.json");
        assert!(args.starts_with(&format!("cluster --plan={}", plan.display())), "{args}");
        let record = kubelet.record();
        assert_eq!(record.started, ["ferry-copy-a1-s0", "ferry-copy-a1-s1"]);
        assert_eq!(record.exits, BTreeMap::from([("ferry-copy-a1-s0".into(), 0), ("ferry-copy-a1-s1".into(), 3)]));
        assert!(record.mounted_secrets["ferry-copy-a1"].contains_key("wrapping-accessors"));
        // Each pod sees only its own shard's keys (the fake runner checked its progress token).
        let files: Vec<&str> = record.projected_files["ferry-copy-a1-s0"].iter().map(String::as_str).collect();
        assert!(files.contains(&"volumes/credentials/progress-token"), "{files:?}");
        assert!(files.iter().all(|file| !file.contains("accessors") && !file.contains("shard-")), "{files:?}");
        assert!(record.errors.is_empty(), "{:?}", record.errors);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_runner_fails_its_pod_with_exit_137() {
        let (client, cluster) = fake_cluster(&[2]);
        let directory = tempfile::tempdir().unwrap();
        let runner = fake_runner(directory.path());
        let root = directory.path().join("pods");
        let kubelet = LocalKubelet::start(client, "e2e", "ferry.dev/job=copy".into(), runner, root.clone());
        let pid_file = root.join("ferry-copy-a1-s2/volumes/tmp/pid");
        eventually("the runner to start", || pid_file.is_file()).await;
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();

        kubelet.kill("ferry-copy-a1-s2").unwrap();
        let phase = || cluster.get("pods", "e2e", "ferry-copy-a1-s2").map(|pod| pod["status"]["phase"].clone());
        eventually("the pod to fail", || phase() == Some(json!("Failed"))).await;
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the runner still runs");
        let pod = cluster.get("pods", "e2e", "ferry-copy-a1-s2").unwrap();
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(137), json!("Error")));
        let record = kubelet.record();
        assert_eq!(record.exits["ferry-copy-a1-s2"], 137);
        assert_eq!(record.killed, BTreeSet::from(["ferry-copy-a1-s2".to_owned()]));
        assert!(record.stopped.is_empty(), "{record:?}");
        let error = kubelet.kill("ferry-copy-a1-s2").unwrap_err();
        assert!(error.contains("no running runner"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_pod_starts_only_once_released() {
        let (client, cluster) = fake_cluster(&[0]);
        let directory = tempfile::tempdir().unwrap();
        let runner = fake_runner(directory.path());
        let pod = "ferry-copy-a1-s0";
        let selector = "ferry.dev/job=copy".to_owned();
        let kubelet = LocalKubelet::start_holding(client, "e2e", selector, runner, directory.path().into(), &[pod]);
        // Seen on at least two passes, never started.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            assert!(kubelet.record().started.is_empty(), "a held pod was started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let record = kubelet.record();
        assert_eq!(record.seen.keys().collect::<Vec<_>>(), ["ferry-copy-a1-s0"]);
        assert!(cluster.get("pods", "e2e", "ferry-copy-a1-s0").unwrap()["status"].is_null());

        kubelet.release("ferry-copy-a1-s0");
        let phase = || cluster.get("pods", "e2e", "ferry-copy-a1-s0").map(|pod| pod["status"]["phase"].clone());
        eventually("the released pod to succeed", || phase() == Some(json!("Succeeded"))).await;
        let record = kubelet.record();
        assert_eq!(record.started, ["ferry-copy-a1-s0"]);
        assert_eq!(record.seen["ferry-copy-a1-s0"].len(), 1);
        let credentials: Vec<&str> = record.projected_files["ferry-copy-a1-s0"]
            .iter()
            .filter_map(|path| path.strip_prefix("volumes/credentials/"))
            .collect();
        assert!(credentials.contains(&"progress-token"), "{credentials:?}");
        assert!(record.mounted_config_maps.contains_key("ferry-copy-a1"), "{record:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_pod_has_its_runner_killed_and_a_scheduled_one_is_left_alone() {
        let (client, cluster) = fake_cluster(&[2, 0]);
        // Shard 0 is bound to a node: its kubelet, not this one, runs it.
        cluster.update("pods", "e2e", "ferry-copy-a1-s0", |pod| pod["spec"]["nodeName"] = json!("node-1"));
        let directory = tempfile::tempdir().unwrap();
        let runner = fake_runner(directory.path());
        let root = directory.path().join("pods");
        let kubelet = LocalKubelet::start(client, "e2e", "ferry.dev/job=copy".into(), runner, root.clone());
        let pid_file = root.join("ferry-copy-a1-s2/volumes/tmp/pid");
        eventually("the runner to start", || pid_file.is_file() && kubelet.record().started.len() == 1).await;
        let running = cluster.get("pods", "e2e", "ferry-copy-a1-s2").unwrap();
        assert_eq!(running["status"]["phase"], "Running");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        assert!(Path::new(&format!("/proc/{pid}")).exists());

        cluster.update("pods", "e2e", "ferry-copy-a1-s2", |pod| {
            pod["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
        });
        eventually("the runner to be killed", || !Path::new(&format!("/proc/{pid}")).exists()).await;
        eventually("the stop to be recorded", || !kubelet.record().stopped.is_empty()).await;
        let record = kubelet.record();
        assert_eq!(record.started, ["ferry-copy-a1-s2"]);
        assert_eq!(record.stopped, BTreeSet::from(["ferry-copy-a1-s2".to_owned()]));
        assert_eq!(record.scheduled_elsewhere, BTreeSet::from(["ferry-copy-a1-s0".to_owned()]));
        assert!(cluster.get("pods", "e2e", "ferry-copy-a1-s0").unwrap()["status"].is_null());
    }
}
