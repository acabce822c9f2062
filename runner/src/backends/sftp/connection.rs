//! SSH connections to one SFTP server: the host key checked against the binding's
//! `knownHosts`, a password or a private key held only in memory, and a few connections
//! shared by every transfer, each replaced when it breaks.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opendal::{Error, ErrorKind};
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Preferred, cipher};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use zeroize::Zeroizing;

use super::known_hosts::TrustedKeys;

/// How the runner proves who it is.
pub enum Login {
    /// A password (zeroized on drop).
    Password(Zeroizing<String>),
    /// A decoded private key (ssh-key zeroizes its secret part on drop).
    Key(Arc<PrivateKey>),
}

/// Everything needed to open a connection.
pub struct Connector {
    /// The host, as the binding names it.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The host keys the binding trusts.
    pub trusted: Arc<TrustedKeys>,
    /// The credential.
    pub login: Login,
}

/// One SSH connection and the SFTP session on it.
pub struct Link {
    ssh: Handle<HostCheck>,
    /// The SFTP session (many requests may be in flight on it at once).
    pub sftp: SftpSession,
}

/// Checks the server's key and remembers its fingerprint for the error message.
struct HostCheck {
    trusted: Arc<TrustedKeys>,
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            // Host certificates are not trusted: knownHosts lists keys by value.
            return Ok(false);
        };
        if let Ok(mut slot) = self.offered.lock() {
            *slot = Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(self.trusted.trusts(key))
    }
}

/// How long a connection attempt (TCP, key exchange, login, SFTP start) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SFTP request may wait for its answer.
const REQUEST_TIMEOUT_SECONDS: u64 = 60;

/// The ciphers offered, AES-GCM first: with the CPU's AES instructions (which aws-lc uses)
/// it costs a fraction of ChaCha20-Poly1305, russh's first choice, which took over a third of
/// the runner's CPU on a large upload. The server picks the first it also allows, so one that
/// refuses AES-GCM still gets ChaCha20-Poly1305; the CBC modes stay off.
const CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

impl Connector {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a connection, logs in and starts SFTP.
    pub async fn connect(&self) -> Result<Link, Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_unbounded()).await.unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::Unexpected, format!("sftp: connecting to {} timed out", self.address()))
                .set_temporary())
        })
    }

    async fn connect_unbounded(&self) -> Result<Link, Error> {
        let offered = Arc::new(Mutex::new(None));
        let check = HostCheck { trusted: self.trusted.clone(), offered: offered.clone() };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            preferred: Preferred { cipher: Cow::Borrowed(CIPHERS), ..Preferred::DEFAULT },
            ..client::Config::default()
        });
        let mut ssh = match client::connect(config, (self.host.as_str(), self.port), check).await {
            Ok(ssh) => ssh,
            Err(russh::Error::UnknownKey) => {
                let fingerprint = offered.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "sftp: {} offered host key {fingerprint}, which spec.sftp.knownHosts does not list; the \
                         connection was refused. If the server's key changed, confirm it with its administrator and \
                         update knownHosts",
                        self.address()
                    ),
                ));
            }
            Err(error) => {
                return Err(Error::new(ErrorKind::Unexpected, format!("sftp: connecting to {}", self.address()))
                    .set_source(error)
                    .set_temporary());
            }
        };
        let accepted = match &self.login {
            Login::Password(password) => ssh.authenticate_password(&self.user, password.as_str()).await,
            Login::Key(key) => {
                let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
                ssh.authenticate_publickey(&self.user, PrivateKeyWithHashAlg::new(key.clone(), hash)).await
            }
        }
        .map_err(|error| Error::new(ErrorKind::Unexpected, "sftp: logging in").set_source(error).set_temporary())?;
        if !accepted.success() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "sftp: {} refused the login of user {} with the {} from Vault; check spec.sftp.user and the secret",
                    self.address(),
                    self.user,
                    match self.login {
                        Login::Password(_) => "password",
                        Login::Key(_) => "private key",
                    }
                ),
            ));
        }
        let channel = ssh.channel_open_session().await.map_err(temporary("opening a session"))?;
        channel.request_subsystem(true, "sftp").await.map_err(temporary("starting SFTP"))?;
        let sftp = SftpSession::new(channel.into_stream()).await.map_err(|error| sftp_error("starting SFTP", error))?;
        sftp.set_timeout(REQUEST_TIMEOUT_SECONDS);
        Ok(Link { ssh, sftp })
    }
}

fn temporary(doing: &'static str) -> impl Fn(russh::Error) -> Error {
    move |error| Error::new(ErrorKind::Unexpected, format!("sftp: {doing}")).set_source(error).set_temporary()
}

/// An SFTP error as OpenDAL's: a status the server answered keeps its meaning; anything else
/// (a broken connection, a timeout) is temporary, so the retry layer tries again.
pub fn sftp_error(doing: &str, error: russh_sftp::client::error::Error) -> Error {
    use russh_sftp::client::error::Error as Sftp;
    let kind = match &error {
        Sftp::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => ErrorKind::NotFound,
            StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
            StatusCode::OpUnsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Unexpected,
        },
        _ => ErrorKind::Unexpected,
    };
    let broken = breaks_the_connection(&error);
    let error = Error::new(kind, format!("sftp: {doing}")).set_source(error);
    if broken { error.set_temporary() } else { error }
}

/// Whether an error means the connection is no longer usable.
pub fn breaks_the_connection(error: &russh_sftp::client::error::Error) -> bool {
    !matches!(error, russh_sftp::client::error::Error::Status(_))
}

/// A few connections, handed out in turn, so transfers share them; a broken one is
/// replaced on next use.
pub struct Links {
    connector: Connector,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Link>>>>,
    next: AtomicUsize,
}

/// A connection lent out, and the slot it came from.
pub struct Lent {
    slot: usize,
    /// The connection.
    pub link: Arc<Link>,
}

impl Links {
    /// Up to `connections` connections, opened when first needed.
    pub fn new(connector: Connector, connections: usize) -> Self {
        let slots = (0..connections.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect();
        Self { connector, slots, next: AtomicUsize::new(0) }
    }

    /// The next connection, opened (or reopened) if needed.
    pub async fn get(&self) -> Result<Lent, Error> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut held = self.slots[slot].lock().await;
        if let Some(link) = held.as_ref()
            && !link.ssh.is_closed()
        {
            return Ok(Lent { slot, link: link.clone() });
        }
        let link = Arc::new(self.connector.connect().await?);
        *held = Some(link.clone());
        Ok(Lent { slot, link })
    }

    /// Maps an SFTP error, dropping the connection it came from if the error broke it.
    pub async fn failed(&self, lent: &Lent, doing: &str, error: russh_sftp::client::error::Error) -> Error {
        if breaks_the_connection(&error) {
            let mut held = self.slots[lent.slot].lock().await;
            if held.as_ref().is_some_and(|link| Arc::ptr_eq(link, &lent.link)) {
                *held = None;
            }
        }
        sftp_error(doing, error)
    }
}
