#!/usr/bin/env python3
"""Ferry vs rclone on the same machine, in the same run: medians of several runs per case.

Cases (issue #4): 20,000 x 4 KiB files fs->S3; 8 x 512 MiB files fs->S3; 20,000 x 4 KiB and
4 x 512 MiB fs->fs, each also against the floor `cp -r` + `b3sum` of both trees; and, beyond
the issue, 20,000 x 4 KiB S3->fs. Issue #12 adds fs->Azure Blob (small and large), S3->Azure
Blob and fs->WebDAV (small and large), against Azurite and `rclone serve webdav`. Then
fs->SFTP (small and large) against OpenSSH's sshd, and 8 x 512 MiB S3->S3 between two buckets
of one SeaweedFS, both copied on the server (one access key on both sides; CopyObject) and
streamed through the client (Ferry: a second access key for the destination; rclone:
`--disable Copy`), and streamed again from a copy of the source uploaded in 8 MiB parts (as
AWS's CLI does), where Ferry's proof is the source's own multipart ETag.
`--only azblob` (a substring of case names) runs some of them; `--only s3->s3` both S3->S3.
Measures wall time, objects/s, MB/s, CPU seconds (user+sys of the client), peak RSS, and the
server's CPU seconds. Every run writes into a new destination (this machine's ext4
slows down for minutes after large deletes). Usage: bench/bench.py [--runs 3] [--quick]
"""
import argparse, json, os, shlex, shutil, statistics, subprocess, sys, tempfile, time, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = pathlib.Path(os.environ.get("FERRY_TOOLS", pathlib.Path.home() / ".cache/ferry/tools"))
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/ferry/target"))
FERRY = TARGET / "release" / "ferry-runner"
RCLONE = TOOLS / "bin" / "rclone"
TRANSFERS = 16


def measure(argv, env=None, server_pid=None):
    """Runs argv; returns wall seconds, client CPU seconds, peak RSS (MiB), server CPU seconds."""
    settle(server_pid)
    server_before = cpu_of(server_pid)
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed ({status}): {stderr[-2000:]}")
    settle(server_pid)
    server = cpu_of(server_pid) - server_before if server_pid else 0.0
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, server


def cpu_of(pid):
    if not pid:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks


def settle(pid, timeout=10.0):
    """For sshd, waits until it has no child processes: it serves each connection in a child
    whose CPU counts in the server's only once reaped. Before a run, so that an earlier purge's
    is not counted; after, so that the run's is. The other servers serve in their own process."""
    try:
        if not pid or pathlib.Path(f"/proc/{pid}/comm").read_text().strip() != "sshd":
            return
        deadline = time.monotonic() + timeout
        while pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split() and time.monotonic() < deadline:
            time.sleep(0.05)
    except OSError:
        return


def b3sum():
    """The floor's hasher: b3sum on PATH, else installed from crates.io into the tools directory."""
    found = shutil.which("b3sum") or (str(TOOLS / "bin" / "b3sum") if (TOOLS / "bin" / "b3sum").exists() else None)
    if not found:
        subprocess.run(["cargo", "install", "--locked", "-q", "b3sum", "--root", str(TOOLS)], check=True)
        found = str(TOOLS / "bin" / "b3sum")
    return found


def make_small(root, count=20000, size=4096):
    for i in range(count):
        d = root / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(os.urandom(size))


def make_large(root, count, size):
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    for i in range(count):
        with open(root / f"large{i}.bin", "wb") as f:
            for j in range(size >> 20):
                f.write(block[j % 7:] + block[: j % 7])


def start_s3(state):
    env = dict(os.environ)
    out = subprocess.run([str(ROOT / "scripts/test-servers.sh"), "start"], env={**env, "FERRY_SERVERS_DIR": str(state)},
                         check=True, capture_output=True, text=True).stdout
    # shlex: FERRY_TEST_SFTP_HOST_KEY is quoted (it holds a space).
    values = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    pid = int((state / "weed.pid").read_text())
    return values, pid


def binding(name, side):
    """A CredentialBinding for ("fs", root), ("s3", (endpoint, bucket, vault_path)),
    ("azblob", (endpoint, account, container, vault_path)), ("webdav", (endpoint, vault_path)) or
    ("sftp", (host, port, user, root, host_key, vault_path))."""
    kind, value = side
    head = f"apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n"
    if kind == "fs":
        return f"{head}  provider: fs\n  fs: {{root: {value}}}\n"
    if kind == "azblob":
        endpoint, account, container, vault_path = value
        return (f"{head}  provider: azblob\n  azblob: {{endpoint: '{endpoint}', account: {account}, container: {container}}}\n"
                f"  vault: {{path: {vault_path}}}\n")
    if kind == "webdav":
        endpoint, vault_path = value
        return f"{head}  provider: webdav\n  webdav: {{endpoint: '{endpoint}'}}\n  vault: {{path: {vault_path}}}\n"
    if kind == "sftp":
        host, port, user, root, host_key, vault_path = value
        return (f"{head}  provider: sftp\n  sftp: {{host: \"{host}\", port: {port}, user: {user}, root: \"{root}\", "
                f"knownHosts: \"[{host}]:{port} {host_key}\"}}\n  vault: {{path: {vault_path}}}\n")
    endpoint, bucket, vault_path = value
    return (f"apiVersion: ferry.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {{name: {name}}}\nspec:\n  provider: s3\n"
            f"  s3: {{endpoint: '{endpoint}', region: us-east-1, bucket: {bucket}, forcePathStyle: true}}\n  vault: {{path: {vault_path}}}\n")


def manifests(directory, source, destination, destination_path=""):
    text = (f"apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: bench}}\nspec:\n"
            f"  source: {{binding: src}}\n  destination: {{binding: dst, path: '{destination_path}'}}\n  verify: checksum\n"
            f"  transfers: {TRANSFERS}\n---\n"
            f"{binding('src', source)}---\n{binding('dst', destination)}")
    path = directory / "job.yaml"
    path.write_text(text)
    return path


def put_secret(env, path, fields):
    subprocess.run(["curl", "-sf", "-X", "POST", "-H", f"X-Vault-Token: {env['VAULT_TOKEN']}", "-d",
                    json.dumps({"data": fields}), f"{env['VAULT_ADDR']}/v1/secret/data/{path}"], check=True, capture_output=True)


def median_row(samples):
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def main():  # noqa: C901 (one linear script)
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller data sets, for trying the script")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    # The binary measured is the one built here, wherever the target directory defaults to.
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferry-runner"], cwd=ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)})
    hasher = b3sum()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    # The SFTP account must reach its root under work/servers (mkdtemp makes work 0700).
    work.chmod(0o755)
    small_count = 2000 if args.quick else 20000
    large_size = (64 if args.quick else 512) << 20
    try:
        make_small(work / "small", small_count)
        make_large(work / "large8", 8, large_size)
        make_large(work / "large4", 4, large_size)
        # Written back now, or the first measured run's flush would write the data sets too.
        os.sync()
        s3, weed = start_s3(work / "servers")
        env = {**os.environ, "VAULT_ADDR": s3["FERRY_TEST_VAULT_ADDR"], "VAULT_TOKEN": s3["FERRY_TEST_VAULT_TOKEN"]}
        env.pop("AWS_CA_BUNDLE", None)
        vault_path = "bench/s3"
        subprocess.run(["curl", "-sf", "-X", "POST", "-H", f"X-Vault-Token: {env['VAULT_TOKEN']}", "-d",
                        json.dumps({"data": {"accessKeyId": s3["FERRY_TEST_S3_ACCESS_KEY"], "secretAccessKey": s3["FERRY_TEST_S3_SECRET_KEY"]}}),
                        f"{env['VAULT_ADDR']}/v1/secret/data/{vault_path}"], check=True, capture_output=True)
        # The second identity in scripts/test-servers.sh's SeaweedFS config: another access key
        # on the same endpoint, so Ferry cannot copy on the server and streams.
        put_secret(env, "bench/s3-second", {"accessKeyId": "ferry-test-2", "secretAccessKey": "ferry-test-secret-2"})
        remote = (f":s3,provider=Other,access_key_id={s3['FERRY_TEST_S3_ACCESS_KEY']},secret_access_key={s3['FERRY_TEST_S3_SECRET_KEY']},"
                  f"endpoint='{s3['FERRY_TEST_S3_ENDPOINT']}',region=us-east-1,force_path_style=true")
        azure = (s3["FERRY_TEST_AZURE_ENDPOINT"], s3["FERRY_TEST_AZURE_ACCOUNT"], s3["FERRY_TEST_AZURE_KEY"])
        azure_remote = f":azureblob,account={azure[1]},key='{azure[2]}',endpoint='{azure[0]}'"
        put_secret(env, "bench/azblob", {"accountKey": azure[2]})
        webdav = (s3["FERRY_TEST_WEBDAV_ENDPOINT"], s3["FERRY_TEST_WEBDAV_USER"], s3["FERRY_TEST_WEBDAV_PASSWORD"])
        obscured = subprocess.run([str(RCLONE), "obscure", webdav[2]], check=True, capture_output=True, text=True).stdout.strip()
        webdav_remote = f":webdav,url='{webdav[0]}',vendor=rclone,user={webdav[1]},pass={obscured}"
        put_secret(env, "bench/webdav", {"username": webdav[1], "password": webdav[2]})
        sftp = (s3["FERRY_TEST_SFTP_HOST"], s3["FERRY_TEST_SFTP_PORT"], s3["FERRY_TEST_SFTP_USER"], s3["FERRY_TEST_SFTP_ROOT"],
                s3["FERRY_TEST_SFTP_HOST_KEY"], "bench/sftp")
        put_secret(env, "bench/sftp", {"privateKey": pathlib.Path(s3["FERRY_TEST_SFTP_KEY_FILE"]).read_text()})
        # rclone checks the host key too, against a known_hosts file.
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[{sftp[0]}]:{sftp[1]} {sftp[4]}\n")
        sftp_remote = (f":sftp,host={sftp[0]},port={sftp[1]},user={sftp[2]},key_file='{s3['FERRY_TEST_SFTP_KEY_FILE']}',"
                       f"known_hosts_file='{known_hosts}',shell_type=none")
        azurite, dav = int((work / "servers" / "azurite.pid").read_text()), int((work / "servers" / "webdav.pid").read_text())
        sshd = int((work / "servers" / "sshd.pid").read_text())
        # Filesystem cases first, before the S3 server's deletions and compaction keep the
        # disk busy.
        cases = [
            ("small fs->fs", "small", small_count, "fs"),
            ("large fs->fs", "large4", 4, "fs"),
            ("small s3->fs", "small", small_count, "s3-fs"),
            ("small fs->s3", "small", small_count, "s3"),
            ("large fs->s3", "large8", 8, "s3"),
            ("small fs->azblob", "small", small_count, "azblob"),
            ("large fs->azblob", "large8", 8, "azblob"),
            ("small s3->azblob", "small", small_count, "s3-azblob"),
            ("small fs->webdav", "small", small_count, "webdav"),
            ("large fs->webdav", "large8", 8, "webdav"),
            ("small fs->sftp", "small", small_count, "sftp"),
            ("large fs->sftp", "large8", 8, "sftp"),
            ("large s3->s3 server-side", "large8", 8, "s3-s3"),
            ("large s3->s3 streamed", "large8", 8, "s3-s3-streamed"),
            ("large s3->s3 streamed, 8 MiB parts", "large8", 8, "s3-s3-parts"),
        ]
        cases = [case for case in cases if args.only in case[0]]
        kinds = {case[3] for case in cases}
        # The sources of the s3->fs, s3->azblob and s3->s3 cases, uploaded once (when a selected
        # case reads them) and not measured.
        # rclone sends objects up to 200 MiB in one PUT; "parts" holds the same files in 8 MiB
        # parts, as AWS's CLI and SDKs upload anything over 8 MiB.
        source_bucket, large_source_bucket, parts_bucket = "benchsource", "benchlargesource", "benchparts"
        eight_mib_parts = ["--s3-upload-cutoff", "8M", "--s3-chunk-size", "8M"]
        for bucket, data, needed, options in ((source_bucket, "small", {"s3-fs", "s3-azblob"}, []),
                                              (large_source_bucket, "large8", {"s3-s3", "s3-s3-streamed"}, []),
                                              (parts_bucket, "large8", {"s3-s3-parts"}, eight_mib_parts)):
            if kinds & needed:
                subprocess.run([str(RCLONE), "mkdir", f"{remote}:{bucket}"], env=env, check=True)
                subprocess.run([str(RCLONE), "copy", f"--transfers={TRANSFERS}", *options, str(work / data), f"{remote}:{bucket}"],
                               env=env, check=True, capture_output=True)
        results = []
        counter = 0
        for name, data, objects, kind in cases:
            source = work / data
            size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
            tools = {"ferry": [], "rclone": []} | ({"floor": []} if kind == "fs" else {})
            for run in range(args.runs):
                for tool in tools:
                    counter += 1
                    target = f"bench{counter}"
                    if kind in ("azblob", "s3-azblob"):
                        subprocess.run([str(RCLONE), "mkdir", f"{azure_remote}:{target}"], env=env, check=True)
                        server = azurite
                        destination_side = ("azblob", (azure[0], azure[1], target, "bench/azblob"))
                        if kind == "azblob":
                            source_side, rclone_source = ("fs", source), str(source)
                        else:
                            source_side = ("s3", (s3["FERRY_TEST_S3_ENDPOINT"], source_bucket, vault_path))
                            rclone_source = f"{remote}:{source_bucket}"
                        if tool == "ferry":
                            argv = [str(FERRY), "run", "-f", str(manifests(work, source_side, destination_side))]
                        else:
                            argv = [str(RCLONE), "copy", "--checksum", f"--transfers={TRANSFERS}", rclone_source, f"{azure_remote}:{target}"]
                    elif kind == "webdav":
                        server = dav
                        if tool == "ferry":
                            argv = [str(FERRY), "run", "-f", str(manifests(work, ("fs", source), ("webdav", (webdav[0], "bench/webdav")), target))]
                        else:
                            # No checksum on either side to compare: size and time, as rclone does by default.
                            argv = [str(RCLONE), "copy", f"--transfers={TRANSFERS}", str(source), f"{webdav_remote}:{target}"]
                    elif kind == "sftp":
                        server = sshd
                        if tool == "ferry":
                            argv = [str(FERRY), "run", "-f", str(manifests(work, ("fs", source), ("sftp", sftp), target))]
                        else:
                            # No checksum on the SFTP side (shell_type=none: no md5sum over ssh): size
                            # and time, as rclone does by default.
                            argv = [str(RCLONE), "copy", f"--transfers={TRANSFERS}", str(source), f"{sftp_remote}:{sftp[3]}/{target}"]
                    elif kind in ("s3-s3", "s3-s3-streamed", "s3-s3-parts"):
                        subprocess.run([str(RCLONE), "mkdir", f"{remote}:{target}"], env=env, check=True)
                        server = weed
                        if tool == "ferry":
                            # One endpoint, region and access key on both sides: Ferry copies on the
                            # server (CopyObject). The second access key on the destination makes it
                            # stream through the runner.
                            destination_vault = vault_path if kind == "s3-s3" else "bench/s3-second"
                            from_bucket = parts_bucket if kind == "s3-s3-parts" else large_source_bucket
                            bucket = ("s3", (s3["FERRY_TEST_S3_ENDPOINT"], from_bucket, vault_path))
                            argv = [str(FERRY), "run", "-f",
                                    str(manifests(work, bucket, ("s3", (s3["FERRY_TEST_S3_ENDPOINT"], target, destination_vault))))]
                        else:
                            # Within one remote rclone copies on the server too. `--disable Copy` turns
                            # off its server-side copy feature ("Copy", as `rclone backend features`
                            # lists it), so it downloads and uploads.
                            disable = ["--disable", "Copy"] if kind != "s3-s3" else []
                            from_bucket = parts_bucket if kind == "s3-s3-parts" else large_source_bucket
                            argv = [str(RCLONE), "copy", "--checksum", f"--transfers={TRANSFERS}", *disable,
                                    f"{remote}:{from_bucket}", f"{remote}:{target}"]
                    elif kind == "s3":
                        subprocess.run([str(RCLONE), "mkdir", f"{remote}:{target}"], env=env, check=True)
                        server = weed
                        if tool == "ferry":
                            argv = [str(FERRY), "run", "-f", str(manifests(work, ("fs", source), ("s3", (s3["FERRY_TEST_S3_ENDPOINT"], target, vault_path))))]
                        else:
                            argv = [str(RCLONE), "copy", "--checksum", f"--transfers={TRANSFERS}", str(source), f"{remote}:{target}"]
                    elif kind == "s3-fs":
                        server = weed
                        destination = work / "out" / target
                        if tool == "ferry":
                            bucket = ("s3", (s3["FERRY_TEST_S3_ENDPOINT"], source_bucket, vault_path))
                            argv = [str(FERRY), "run", "-f", str(manifests(work, bucket, ("fs", destination)))]
                        else:
                            argv = [str(RCLONE), "copy", "--checksum", f"--transfers={TRANSFERS}", f"{remote}:{source_bucket}", str(destination)]
                    else:
                        server = None
                        destination = work / "out" / target
                        if tool == "ferry":
                            argv = [str(FERRY), "run", "-f", str(manifests(work, ("fs", source), ("fs", destination)))]
                        elif tool == "rclone":
                            argv = [str(RCLONE), "copy", "--checksum", f"--transfers={TRANSFERS}", str(source), str(destination)]
                        else:
                            script = f"cp -r '{source}' '{destination}' && find '{source}' '{destination}' -type f -print0 | xargs -0 '{hasher}' > /dev/null"
                            argv = ["bash", "-c", script]
                    if tool == "ferry" and os.environ.get("FERRY_BENCH_PERF"):
                        # A profile of Ferry's runs, for finding where its CPU goes (perf's own
                        # cost lands in the figures, so they are not comparable then).
                        profile = f"{os.environ['FERRY_BENCH_PERF']}-{name.replace(' ', '_').replace('>', '')}-{run}.data"
                        argv = ["perf", "record", "-q", "-F", "499", "-g", "-o", profile, "--", *argv]
                    wall, cpu, rss, server_cpu = measure(argv, env, server)
                    # Large copies are removed at once, or they would fill the disk. Small-file
                    # trees stay until the end: right after 20,000 deletions ext4 allocates
                    # inodes many times slower, which would land in the next measurement.
                    if kind in ("s3", "s3-s3", "s3-s3-streamed", "s3-s3-parts"):
                        subprocess.run([str(RCLONE), "purge", f"{remote}:{target}"], env=env, check=True, capture_output=True)
                    elif kind in ("azblob", "s3-azblob"):
                        subprocess.run([str(RCLONE), "purge", f"{azure_remote}:{target}"], env=env, check=True, capture_output=True)
                    elif kind == "webdav":
                        subprocess.run([str(RCLONE), "purge", f"{webdav_remote}:{target}"], env=env, check=True, capture_output=True)
                    elif kind == "sftp":
                        subprocess.run([str(RCLONE), "purge", f"{sftp_remote}:{sftp[3]}/{target}"], env=env, check=True, capture_output=True)
                    elif data != "small":
                        shutil.rmtree(destination, ignore_errors=True)
                    os.sync()
                    tools[tool].append({"wall": wall, "cpu": cpu, "rss": rss, "server": server_cpu})
                    print(f"  {name:14} {tool:6} run {run + 1}: {wall:7.2f}s cpu {cpu:6.2f}s rss {rss:6.1f}MiB", file=sys.stderr)
            results.append((name, objects, size, {tool: median_row(samples) for tool, samples in tools.items()}))
        print_table(results, args.runs)
    finally:
        subprocess.run([str(ROOT / "scripts/test-servers.sh"), "stop"], env={**os.environ, "FERRY_SERVERS_DIR": str(work / "servers")})
        shutil.rmtree(work, ignore_errors=True)


def print_table(results, runs):
    print(f"\nFerry vs rclone, medians of {runs} runs, transfers={TRANSFERS}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| case | tool | wall s | objects/s | MB/s | client CPU s | server CPU s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, objects, size, rows in results:
        for tool, row in rows.items():
            print(f"| {name} | {tool} | {row['wall']:.2f} | {objects / row['wall']:.1f} | {size / 1e6 / row['wall']:.1f} | "
                  f"{row['cpu']:.2f} | {row['server']:.2f} | {row['rss']:.0f} |")
    print("\n| case | Ferry/rclone objects/s | Ferry/rclone MB/s | Ferry/rclone CPU s | Ferry/floor wall |")
    print("|---|---:|---:|---:|---:|")
    for name, objects, size, rows in results:
        ferry, rclone = rows["ferry"], rows["rclone"]
        floor = f"{ferry['wall'] / rows['floor']['wall']:.2f}" if "floor" in rows else "-"
        print(f"| {name} | {rclone['wall'] / ferry['wall']:.2f} | {rclone['wall'] / ferry['wall']:.2f} | "
              f"{ferry['cpu'] / rclone['cpu']:.2f} | {floor} |")
    by_name = {name: rows for name, _, _, rows in results}
    if "large s3->s3 server-side" in by_name and "large s3->s3 streamed" in by_name:
        server_side, streamed = by_name["large s3->s3 server-side"]["ferry"], by_name["large s3->s3 streamed"]["ferry"]
        print(f"\nFerry server-side vs streamed: {streamed['wall'] / server_side['wall']:.2f}× faster")


if __name__ == "__main__":
    main()
