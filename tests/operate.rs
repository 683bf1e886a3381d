//! The artifacts people run spillway from, checked as they meet them:
//!
//! - the Debian package of `scripts/package.sh`: `dpkg -i`, `spillway
//!   --version` from /usr/bin, the service user and file modes, the
//!   packaged config passing `--dry-run`, the service's command line run as
//!   the service user, `systemd-analyze verify` on the unit, `dpkg -r` and
//!   `dpkg -P`;
//! - the static binary: `chroot` into a directory holding only it, a config
//!   and an /etc/hosts, where it checks the config, serves `/health`,
//!   resolves a host name and exports a breach from a real VictoriaMetrics to
//!   another;
//! - the image: `podman build` of the Dockerfile around that binary (offline,
//!   `FROM scratch`), its config (user, port, volume, healthcheck), and its
//!   file system exported and run by `chroot` as the image's user;
//! - the Kubernetes manifests: validated offline against the Kubernetes
//!   schemas (`kubernetes-validate`), the scrape objects (CRDs the validator
//!   has no schema for) checked against the Service, and the ConfigMap's
//!   config passing `spillway run --dry-run` with the StatefulSet's flags.
//!
//! The package, chroot and image tests need root (CI runs as root). One
//! release build serves them all: `scripts/package.sh` builds the static
//! binary once (cargo reuses it) and packs that binary into the .deb.

mod common;

use common::{free_port, wait_for, Server, Vm};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Debian's CA bundle (package ca-certificates).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root(what: &str) {
    let uid = ok(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "{what} needs root (CI runs as root); run the tests as root"
    );
}

fn require_tool(name: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: run scripts/install-deps.sh or `apt-get install -y {package}`"
    );
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `scripts/package.sh` into `out`; returns (static binary, .deb or None).
/// `SPILLWAY_STATIC_BINARY=PATH` packages a binary built before (its
/// `package.sh` run) instead of building: for quick local runs.
fn package(out: &Path, static_only: bool) -> (PathBuf, Option<PathBuf>) {
    let mut cmd = Command::new(repo().join("scripts/package.sh"));
    cmd.arg("--out").arg(out);
    if let Some(bin) = std::env::var_os("SPILLWAY_STATIC_BINARY") {
        eprintln!(
            "packaging {} (SPILLWAY_STATIC_BINARY) instead of building",
            bin.to_string_lossy()
        );
        cmd.arg("--binary").arg(bin);
    }
    if static_only {
        cmd.arg("--static-only");
    }
    ok(&mut cmd);
    let bin = out.join(format!("spillway-{}-x86_64-linux-static", version()));
    assert!(
        bin.is_file(),
        "package.sh made no static binary at {}",
        bin.display()
    );
    let deb = out.join(format!("spillway_{}_amd64.deb", version()));
    (
        bin,
        (!static_only).then(|| {
            assert!(deb.is_file(), "package.sh made no {}", deb.display());
            deb
        }),
    )
}

/// Purges the package on drop, so a failing test leaves the machine clean.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "spillway"]).output();
    }
}

#[test]
fn deb_installs_runs_as_its_user_and_removes() {
    require_root("installing the .deb");
    require_tool("dpkg-deb", "dpkg");
    let out = tempfile::tempdir().unwrap();
    let (_, deb) = package(out.path(), false);
    let deb = deb.unwrap();
    let installed = Installed;
    ok(Command::new("dpkg").arg("-i").arg(&deb));

    let v = ok(Command::new("/usr/bin/spillway").arg("--version"));
    assert!(
        v.starts_with(&format!("spillway {} (commit ", version())),
        "{v}"
    );
    assert!(v.contains("built "), "{v}");
    let user = ok(Command::new("getent").args(["passwd", "spillway"]));
    assert!(user.contains("/usr/sbin/nologin"), "{user}");
    let mode = ok(Command::new("stat").args(["-c", "%a %U:%G", "/etc/spillway/spillway.yml"]));
    assert_eq!(mode.trim(), "640 root:spillway");
    for f in [
        "/usr/share/man/man1/spillway-run.1.gz",
        "/usr/share/bash-completion/completions/spillway",
        "/usr/lib/systemd/system/spillway.service",
        "/etc/default/spillway",
    ] {
        assert!(Path::new(f).is_file(), "{f} missing");
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "spillway"]));
    assert!(
        conffiles.contains("/etc/spillway/spillway.yml"),
        "{conffiles}"
    );
    let dry = ok(Command::new("/usr/bin/spillway").args([
        "run",
        "--dry-run",
        "-c",
        "/etc/spillway/spillway.yml",
    ]));
    assert!(dry.contains("OK ("), "{dry}");

    // The unit's command, as the unit's user, in the state directory systemd would make.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/spillway.service").unwrap();
    for line in [
        "User=spillway",
        "ExecStart=/usr/bin/spillway run -c /etc/spillway/spillway.yml $SPILLWAY_ARGS",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=spillway",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/spillway",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing in the unit"
        );
    }
    std::fs::create_dir_all("/var/lib/spillway").unwrap();
    ok(Command::new("chown").args(["spillway:spillway", "/var/lib/spillway"]));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut service = Server::start_in(
        // setpriv execs the binary itself, so the signals reach spillway.
        "setpriv",
        port,
        dir,
        [
            "--reuid=spillway",
            "--regid=spillway",
            "--init-groups",
            "/usr/bin/spillway",
            "run",
            "-c",
            "/etc/spillway/spillway.yml",
            "--http.listen",
            &listen,
            // The probe below uses a name; names are served only when allowed.
            "--http.allowed-hosts",
            "spillway.test",
        ]
        .map(String::from)
        .to_vec(),
    );
    service.wait_ready("/health");
    assert_eq!(
        service.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        service.log()
    );
    assert!(
        !Path::new("/var/lib/spillway/spillway.running").exists(),
        "a clean stop removes the run marker"
    );

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = run(Command::new("systemd-analyze").args([
                "verify",
                "/usr/lib/systemd/system/spillway.service",
            ]));
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
            eprintln!("systemd-analyze verify: OK {}", text.trim());
        }
        _ => eprintln!("systemd is not present on this machine: unit verification with systemd-analyze skipped"),
    }

    ok(Command::new("dpkg").args(["-r", "spillway"]));
    assert!(
        !Path::new("/usr/bin/spillway").exists(),
        "dpkg -r left the binary"
    );
    assert!(
        Path::new("/etc/spillway/spillway.yml").exists(),
        "dpkg -r keeps conffiles"
    );
    ok(Command::new("dpkg").args(["-P", "spillway"]));
    assert!(
        !Path::new("/etc/spillway").exists(),
        "dpkg -P removes the config"
    );
    assert!(
        !Path::new("/var/lib/spillway").exists(),
        "dpkg -P removes the queues"
    );
    drop(installed);
}

/// A root holding only `files` (path, bytes, mode).
fn empty_root(files: &[(&str, Vec<u8>, u32)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    for (path, bytes, mode) in files {
        let p = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    root
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn static_binary_runs_in_an_empty_root() {
    require_root("chroot");
    let out = tempfile::tempdir().unwrap();
    let (bin, _) = package(out.path(), true);
    let dynamic = ok(Command::new("readelf").arg("-d").arg(&bin));
    assert!(
        !dynamic.contains("NEEDED"),
        "the static binary needs shared libraries:\n{dynamic}"
    );

    let src = Vm::start();
    let dest = Vm::start();
    let now = now_ms();
    let samples: Vec<(i64, f64)> = ((now - 300_000) / 1000..=(now + 120_000) / 1000)
        .map(|t| (t * 1000, 99.0))
        .collect();
    src.import(&common::vm_line(
        &[("__name__", "temp"), ("sensor", "x")],
        &samples,
    ));
    // The datasource by a host name only /etc/hosts in the root knows.
    let config = format!(
        "datasource: {{url: 'http://source.test:{}'}}
rule_files: ['/rules/*.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: /data}}
destinations:
  - {{name: d, url: 'http://127.0.0.1:{}/api/v1/write', flush_interval: 200ms}}
",
        src.server.port, dest.server.port
    );
    let rules =
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: hot\n    expr: temp > 50\n";
    let root = empty_root(&[
        ("/spillway", std::fs::read(&bin).unwrap(), 0o755),
        ("/spillway.yml", config.into_bytes(), 0o644),
        ("/rules/hot.yml", rules.as_bytes().to_vec(), 0o644),
        (
            "/etc/hosts",
            b"127.0.0.1 localhost source.test spillway.test\n".to_vec(),
            0o644,
        ),
        // The HTTP client refuses to start without a trust store, even for http://.
        (
            CA_BUNDLE,
            std::fs::read(CA_BUNDLE).expect("ca-certificates"),
            0o644,
        ),
    ]);
    let r = root.path().display().to_string();
    let v = ok(Command::new("chroot").args([&r, "/spillway", "--version"]));
    assert!(v.starts_with(&format!("spillway {}", version())), "{v}");
    let dry = ok(Command::new("chroot").args([
        &r,
        "/spillway",
        "run",
        "--dry-run",
        "-c",
        "/spillway.yml",
    ]));
    assert!(dry.contains("OK (1 rule groups"), "{dry}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut served = Server::start(
        "chroot",
        port,
        [
            r.as_str(),
            "/spillway",
            "run",
            "-c",
            "/spillway.yml",
            "--http.listen",
            &listen,
            // The probe below uses a name; names are served only when allowed.
            "--http.allowed-hosts",
            "spillway.test",
        ]
        .map(String::from)
        .to_vec(),
    );
    served.wait_ready("/health");
    let probe = ok(Command::new("chroot").args([
        &r,
        "/spillway",
        "health",
        "--url",
        &format!("http://spillway.test:{port}"),
    ]));
    assert!(probe.contains("OK"), "{probe}");
    wait_for(
        "a breach exported from inside the root",
        Duration::from_secs(30),
        || dest.series_count(r#"{__name__="hot"}"#) > 0,
    );
    assert_eq!(
        served.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        served.log()
    );
    let mut left: Vec<String> = walk(root.path());
    left.sort();
    assert!(
        left.iter().any(|p| p.starts_with("data/d/")),
        "queue under /data: {left:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn image_builds_offline_from_the_static_binary() {
    require_root("podman with its own storage and chroot");
    require_tool("podman", "podman");
    let out = tempfile::tempdir().unwrap();
    let (bin, _) = package(out.path(), true);
    // A build context holding what the Dockerfile's prebuilt path copies.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("Dockerfile"), ctx.path().join("Dockerfile")).unwrap();
    std::fs::create_dir_all(ctx.path().join("packaging/container/data")).unwrap();
    std::fs::copy(
        repo().join("packaging/container/data/README"),
        ctx.path().join("packaging/container/data/README"),
    )
    .unwrap();
    std::fs::copy(&bin, ctx.path().join("spillway-static")).unwrap();
    std::fs::copy(CA_BUNDLE, ctx.path().join("ca-certificates.crt")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args);
        c
    };
    let context = ctx.path().display().to_string();
    ok(&mut podman(&[
        "build",
        "--pull=never",
        "--network=none",
        "--format",
        "docker",
        "--build-arg",
        "SOURCE=prebuilt",
        "--build-arg",
        "BINARY=spillway-static",
        "--build-arg",
        "CA_BUNDLE=ca-certificates.crt",
        "-t",
        "spillway:test",
        &context,
    ]));
    let inspect = ok(&mut podman(&["image", "inspect", "spillway:test"]));
    let image: serde_json::Value = serde_json::from_str(inspect.trim()).unwrap();
    let c = image[0]["Config"].clone();
    assert_eq!(c["User"], "65532:65532", "{c}");
    assert!(c["ExposedPorts"].get("8880/tcp").is_some(), "{c}");
    assert!(c["Volumes"].get("/var/lib/spillway").is_some(), "{c}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/spillway"]), "{c}");
    // podman keeps a docker-format healthcheck beside the OCI config.
    let health = image[0]["Healthcheck"]["Test"].to_string();
    assert!(
        health.contains("/spillway") && health.contains("health"),
        "{image}"
    );

    // Its file system, run as its user: `podman run` cannot set rlimits in
    // every sandbox, chroot can run what the image holds anywhere.
    ok(&mut podman(&[
        "create",
        "--name",
        "spillway-test",
        "spillway:test",
    ]));
    let tar = store.path().join("rootfs.tar");
    ok(&mut podman(&[
        "export",
        "-o",
        tar.to_str().unwrap(),
        "spillway-test",
    ]));
    let rootfs = tempfile::tempdir().unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(rootfs.path()));
    let files = walk(rootfs.path());
    assert!(files.contains(&"spillway".to_string()), "{files:?}");
    assert!(
        files.iter().all(|f| f == "spillway"
            || f == "etc/ssl/certs/ca-certificates.crt"
            || f.starts_with("var/lib/spillway/")
            || f.starts_with("etc/")
            || f.starts_with("run/")),
        "only the binary and the queue directory come from the image: {files:?}"
    );
    let owner = ok(Command::new("stat")
        .args(["-c", "%u"])
        .arg(rootfs.path().join("var/lib/spillway")));
    assert_eq!(
        owner.trim(),
        "65532",
        "the queue volume belongs to the image's user"
    );
    let r = rootfs.path().display().to_string();
    let v =
        ok(Command::new("chroot").args(["--userspec=65532:65532", &r, "/spillway", "--version"]));
    assert!(v.starts_with(&format!("spillway {}", version())), "{v}");
    // With a config mounted where the image's command looks for it.
    std::fs::create_dir_all(rootfs.path().join("etc/spillway")).unwrap();
    std::fs::write(
        rootfs.path().join("etc/spillway/spillway.yml"),
        "datasource: {url: 'http://vm:8428'}\nstorage: {path: /var/lib/spillway}\n\
         destinations: [{name: d, url: 'https://vm:8428/api/v1/write'}]\n",
    )
    .unwrap();
    let dry = ok(Command::new("chroot").args([
        "--userspec=65532:65532",
        &r,
        "/spillway",
        "run",
        "--dry-run",
        "-c",
        "/etc/spillway/spillway.yml",
    ]));
    assert!(dry.contains("OK ("), "{dry}");
    let _ = podman(&["rm", "-f", "spillway-test"]).output();
    let _ = podman(&["rmi", "-f", "spillway:test"]).output();
}

/// A YAML file as JSON.
fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn kubernetes_manifests_validate_offline_and_their_config_passes_dry_run() {
    let dir = repo().join("deploy/kubernetes");
    let validator = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        validator,
        "kubernetes-validate is not installed: run scripts/install-deps.sh (pip install kubernetes-validate==1.37.0)"
    );
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()))
        .collect();
    for r in &resources {
        // No network: the schemas ship inside the package.
        let out = run(Command::new("unshare")
            .args(["-n", "python3", "-m", "kubernetes_validate", "--strict"])
            .arg(r));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("passed"),
            "{}: {text}",
            r.display()
        );
    }
    // The operators' objects have no schema in it; kubernetes-validate says so,
    // and they are checked against the Service here instead.
    let service = yaml(&dir.join("service.yaml"));
    let port_names: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for (sub, file, kind) in [
        (
            "with-vm-operator",
            "vmservicescrape.yaml",
            "VMServiceScrape",
        ),
        (
            "with-prometheus-operator",
            "servicemonitor.yaml",
            "ServiceMonitor",
        ),
    ] {
        let path = dir.join(sub).join(file);
        let out = run(Command::new("unshare")
            .args(["-n", "python3", "-m", "kubernetes_validate"])
            .arg(&path));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("Couldn't find schema"), "{kind}: {text}");
        let v = yaml(&path);
        assert_eq!(v["kind"], kind);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"], service["metadata"]["labels"],
            "{kind} selects the Service"
        );
        let port = v["spec"]["endpoints"][0]["port"].as_str().unwrap();
        assert!(
            port_names.contains(&port),
            "{kind} scrapes port {port}, the Service has {port_names:?}"
        );
        let k = yaml(&dir.join(sub).join("kustomization.yaml"));
        assert_eq!(k["resources"], serde_json::json!(["../", file]));
    }

    // The ConfigMaps' config and rules, with the StatefulSet's own arguments.
    let cfg = yaml(&dir.join("configmap-config.yaml"));
    let rules = yaml(&dir.join("configmap-rules.yaml"));
    let sts = yaml(&dir.join("statefulset.yaml"));
    let work = tempfile::tempdir().unwrap();
    let rules_dir = work.path().join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    for (name, text) in rules["data"].as_object().unwrap() {
        std::fs::write(rules_dir.join(name), text.as_str().unwrap()).unwrap();
    }
    let config_text = cfg["data"]["spillway.yml"].as_str().unwrap().replace(
        "/etc/spillway/rules/*.yml",
        &format!("{}/*.yml", rules_dir.display()),
    );
    let parsed: serde_json::Value = serde_saphyr::from_str(&config_text).unwrap();
    assert_eq!(
        parsed["cluster"]["members_count"], sts["spec"]["replicas"],
        "cluster.members_count must equal the StatefulSet's replicas"
    );
    let config_path = work.path().join("spillway.yml");
    std::fs::write(&config_path, config_text).unwrap();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let args_for = |pod: &str| -> Vec<String> {
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace(
                        "/etc/spillway/spillway.yml",
                        &config_path.display().to_string(),
                    )
                    .replace("$(POD_NAME)", pod)
            })
            .chain(["--dry-run".to_string()])
            .collect()
    };
    // Listening on 0.0.0.0 needs basic auth: from a secret the pod cannot
    // start without, the one the scrape objects read too.
    let auth_env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SPILLWAY_HTTP_AUTH")
        .expect("SPILLWAY_HTTP_AUTH in the container's env");
    let secret = &auth_env["valueFrom"]["secretKeyRef"];
    assert_eq!(secret["name"], "spillway-http-auth", "{auth_env}");
    assert_ne!(
        secret["optional"], true,
        "the pod must not start without auth"
    );
    for sub in [
        "with-vm-operator/vmservicescrape.yaml",
        "with-prometheus-operator/servicemonitor.yaml",
    ] {
        let basic = &yaml(&dir.join(sub))["spec"]["endpoints"][0]["basicAuth"];
        assert_eq!(
            basic["username"]["name"], "spillway-http-auth",
            "{sub}: {basic}"
        );
        assert_eq!(
            basic["password"]["name"], "spillway-http-auth",
            "{sub}: {basic}"
        );
    }
    let with_auth = [("SPILLWAY_HTTP_AUTH", "spillway:test-password")];
    let dry_run = |args: &[String], env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::spillway_env(None, env, &args)
    };
    for pod in ["spillway-0", "spillway-2"] {
        let out = dry_run(&args_for(pod), &with_auth);
        out.assert_code(0);
        assert!(out.stdout().contains(": OK ("), "{}", out.describe());
    }
    // Without the secret the pod refuses to listen beyond loopback.
    let out = dry_run(&args_for("spillway-0"), &[]);
    out.assert_code(2);
    assert!(out.stderr().contains("--http.auth"), "{}", out.describe());
    // A fourth pod does not fit the config: refused, naming the flag.
    let out = dry_run(&args_for("spillway-3"), &with_auth);
    out.assert_code(2);
    assert!(
        out.stderr().contains("--cluster.member-num \"spillway-3\""),
        "{}",
        out.describe()
    );
    // The mounts the config relies on.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for m in ["/var/lib/spillway", "/etc/spillway", "/etc/spillway/rules"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    assert_eq!(parsed["storage"]["path"], "/var/lib/spillway");
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
}
