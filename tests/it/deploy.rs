//! The deployment examples are well-formed and keep their promises.
//!
//! `examples/docker-compose.yml`, `examples/kubernetes-pod.yaml` and
//! `examples/crumb-proxy.service` (with `examples/systemd/crumb-proxy.toml`)
//! are parsed as YAML or as a systemd unit; the crumb-proxy config each one
//! embeds or references is validated by [`crumb_proxy::Config`]; and the
//! points they exist to make are asserted: the tool shares the proxy's
//! network namespace and the proxy stays on loopback, the Kubernetes sidecar
//! is native and probed on the health port, the unit is hardened and gets
//! its secret through `LoadCredential=`. They are also checked against the
//! `Dockerfile` (config path, health check, user), which they build on.
//!
//! `tests/docker/run.sh` runs the image itself.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crumb_proxy::{Config, ListenAddr};
use yaml_rust2::{Yaml, YamlLoader};

/// The numeric user of the image (`USER` in the Dockerfile).
const IMAGE_USER: &str = "65532:65532";
/// Secret sources that name a file (`credentials.*_file`, the client token).
const SECRET_FILE_KEYS: &[(&str, &str)] = &[
    ("credentials", "password_file"),
    ("credentials", "api_token_file"),
    ("listen", "client_token_file"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a YAML file into its documents.
fn load_yaml(relative: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn str_of<'a>(node: &'a Yaml, what: &str) -> &'a str {
    node.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {node:?}"))
}

fn int_of(node: &Yaml, what: &str) -> i64 {
    node.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, found {node:?}"))
}

fn strings_of(node: &Yaml, what: &str) -> Vec<String> {
    node.as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {node:?}"))
        .iter()
        .map(|item| str_of(item, what).to_owned())
        .collect()
}

/// `"45s"` as seconds (the form the examples use for durations).
fn seconds(text: &str, what: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: expected whole seconds like \"45s\", found {text:?}"))
}

/// A crumb-proxy config taken from an example, parsed and validated.
#[derive(Debug)]
struct ExampleConfig {
    config: Config,
    /// The file as written, for keys `Config` does not expose and for the
    /// secret paths the example mounts.
    raw: toml::Table,
}

impl ExampleConfig {
    /// Validates `text` as the binary would. Secret files are deployment
    /// paths that do not exist here, so each must be absolute and is
    /// replaced by a temporary file (as `configs.rs` does); the rest is
    /// parsed as written.
    fn parse(text: &str, origin: &str) -> Self {
        let raw: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{origin}: not TOML: {e}"));
        let secrets = tempfile::tempdir().unwrap();
        let secret = secrets.path().join("secret");
        std::fs::write(&secret, "example-secret\n").unwrap();
        let mut substituted = raw.clone();
        for (section, key) in SECRET_FILE_KEYS {
            let Some(table) = substituted.get_mut(*section).and_then(|t| t.as_table_mut()) else {
                continue;
            };
            if let Some(value) = table.get_mut(*key) {
                let path = value.as_str().unwrap_or_default();
                assert!(
                    Path::new(path).is_absolute(),
                    "{origin}: `{section}.{key}` = {path:?} should be the absolute path the secret is mounted at"
                );
                *value = toml::Value::String(secret.to_str().unwrap().to_owned());
            }
        }
        let config = Config::from_toml_str(&substituted.to_string(), secrets.path())
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        ExampleConfig { config, raw }
    }

    fn listen(&self) -> SocketAddr {
        match self.config.listen_addr() {
            ListenAddr::Tcp(addr) => *addr,
            other => panic!("expected a TCP listen address, found {other}"),
        }
    }

    /// `section.key` as written, a string.
    fn string(&self, section: &str, key: &str) -> Option<&str> {
        self.raw.get(section)?.get(key)?.as_str()
    }

    /// `section.key` as written, an integer.
    fn integer(&self, section: &str, key: &str) -> Option<i64> {
        self.raw.get(section)?.get(key)?.as_integer()
    }

    /// The longest a stop can take: `shutdown.grace_secs` plus
    /// `shutdown.drain_secs` (defaults 0 and 30).
    fn stop_secs(&self) -> u64 {
        let grace = self.integer("shutdown", "grace_secs").unwrap_or(0);
        let drain = self.integer("shutdown", "drain_secs").unwrap_or(30);
        u64::try_from(grace + drain).unwrap()
    }

    /// The one secret file the config names.
    fn secret_file(&self) -> &str {
        let named: Vec<&str> = SECRET_FILE_KEYS
            .iter()
            .filter(|(section, _)| *section == "credentials")
            .filter_map(|(section, key)| self.string(section, key))
            .collect();
        assert_eq!(
            named.len(),
            1,
            "expected one credentials file, found {named:?}"
        );
        named[0]
    }
}

/// What the examples rely on from the Dockerfile.
#[derive(Debug)]
struct Image {
    user: String,
    /// `CMD`'s `--config` argument: where the config must be mounted.
    config_path: String,
    /// `HEALTHCHECK … CMD [...]`.
    health_check: Vec<String>,
}

impl Image {
    fn from_dockerfile() -> Self {
        // Join continuation lines, drop comments.
        let text = read("Dockerfile").replace("\\\n", " ");
        let instructions: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let last = |name: &str| -> &str {
            instructions
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
                .unwrap_or_else(|| panic!("Dockerfile: no {name} instruction"))
                .trim()
        };
        let json = |text: &str, what: &str| -> Vec<String> {
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("Dockerfile: {what} is not an exec-form list: {e}"))
        };
        let cmd = json(last("CMD"), "CMD");
        let config_path = cmd
            .iter()
            .skip_while(|a| *a != "--config")
            .nth(1)
            .unwrap_or_else(|| panic!("Dockerfile: CMD {cmd:?} has no --config"))
            .clone();
        let health = last("HEALTHCHECK");
        let exec = &health[health.find("CMD ").expect("HEALTHCHECK without CMD") + 4..];
        let mut health_check = vec!["CMD".to_owned()];
        health_check.extend(json(exec.trim(), "HEALTHCHECK CMD"));
        Image {
            user: last("USER").to_owned(),
            config_path,
            health_check,
        }
    }
}

#[test]
fn dockerfile_facts_the_examples_build_on() {
    let image = Image::from_dockerfile();
    assert_eq!(image.user, IMAGE_USER);
    assert_eq!(image.config_path, "/etc/crumb-proxy/config.toml");
    assert_eq!(
        image.health_check,
        ["CMD", "/usr/local/bin/crumb-proxy", "health"]
    );
}

#[test]
fn compose_tool_shares_the_proxys_network_namespace_on_loopback() {
    let docs = load_yaml("examples/docker-compose.yml");
    assert_eq!(docs.len(), 1, "one YAML document");
    let compose = &docs[0];
    let services = compose["services"]
        .as_hash()
        .expect("services is a mapping");
    let proxy = &compose["services"]["crumb-proxy"];
    let tool = &compose["services"]["tool"];
    assert!(proxy.is_hash(), "a crumb-proxy service");
    assert!(tool.is_hash(), "a tool service");

    // The tool joins the proxy's network namespace; nothing is published.
    assert_eq!(
        str_of(&tool["network_mode"], "tool.network_mode"),
        "service:crumb-proxy"
    );
    for (name, service) in services {
        let name = str_of(name, "service name");
        assert!(
            service["ports"].is_badvalue(),
            "service {name} publishes ports; the proxy must be reachable from the tool only"
        );
        assert_ne!(
            service["network_mode"].as_str(),
            Some("host"),
            "service {name} uses the host's network"
        );
    }
    assert_eq!(
        str_of(
            &tool["depends_on"]["crumb-proxy"]["condition"],
            "tool.depends_on"
        ),
        "service_healthy",
        "the tool waits for the proxy's health check"
    );

    // Hardening and the image's user.
    assert_eq!(str_of(&proxy["user"], "crumb-proxy.user"), IMAGE_USER);
    assert_eq!(strings_of(&proxy["cap_drop"], "cap_drop"), ["ALL"]);
    assert!(strings_of(&proxy["security_opt"], "security_opt")
        .contains(&"no-new-privileges:true".to_owned()));

    // The config: inline, mounted where the image's CMD reads it.
    let image = Image::from_dockerfile();
    let mounted = &proxy["configs"][0];
    let source = str_of(&mounted["source"], "configs[0].source");
    assert_eq!(
        str_of(&mounted["target"], "configs[0].target"),
        image.config_path
    );
    let text = str_of(
        &compose["configs"][source]["content"],
        "the inline config's content",
    );
    let config = ExampleConfig::parse(text, "examples/docker-compose.yml config");
    assert_eq!(
        config.listen(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8181)),
        "the proxy listens on the shared loopback"
    );
    // `crumb-proxy health` (the health check) asks 127.0.0.1:8182 by default.
    assert_eq!(
        config.config.health_addr(),
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8182)))
    );
    assert_eq!(
        strings_of(&proxy["healthcheck"]["test"], "healthcheck.test"),
        image.health_check
    );

    // The secret: a read-only file secret at the path the config names.
    let secret = &proxy["secrets"][0];
    let secret_source = str_of(&secret["source"], "secrets[0].source");
    let target = str_of(&secret["target"], "secrets[0].target");
    assert_eq!(
        config.secret_file(),
        format!("/run/secrets/{target}"),
        "the config reads the mounted secret"
    );
    assert!(
        !compose["secrets"][secret_source]["file"].is_badvalue(),
        "the secret comes from a file (a read-only bind mount)"
    );

    // Docker waits long enough for the drain.
    let grace = seconds(
        str_of(&proxy["stop_grace_period"], "stop_grace_period"),
        "stop_grace_period",
    );
    assert!(
        grace > config.stop_secs(),
        "stop_grace_period {grace}s must exceed grace + drain ({}s)",
        config.stop_secs()
    );
}

#[test]
fn kubernetes_pod_runs_the_proxy_as_a_native_sidecar() {
    let docs = load_yaml("examples/kubernetes-pod.yaml");
    let of_kind = |kind: &str| -> &Yaml {
        let found: Vec<&Yaml> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    };
    let config_map = of_kind("ConfigMap");
    let pod = of_kind("Pod");
    let spec = &pod["spec"];

    // The proxy is an init container that keeps running: a native sidecar.
    let init = spec["initContainers"]
        .as_vec()
        .expect("initContainers is a list");
    let sidecar = init
        .iter()
        .find(|c| c["name"].as_str() == Some("crumb-proxy"))
        .expect("an init container named crumb-proxy");
    assert_eq!(
        str_of(&sidecar["restartPolicy"], "sidecar restartPolicy"),
        "Always"
    );
    let containers = spec["containers"].as_vec().expect("containers is a list");
    assert!(
        containers
            .iter()
            .all(|c| c["name"].as_str() != Some("crumb-proxy")),
        "the proxy is not an ordinary container"
    );

    // Probes on the health port.
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(str_of(&get["path"], probe), path, "{probe} path");
        assert_eq!(int_of(&get["port"], probe), 8182, "{probe} port");
    }

    // Non-root, no privileges, read-only root.
    let pod_security = &spec["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"].as_bool(), Some(true));
    let image_uid: i64 = IMAGE_USER.split(':').next().unwrap().parse().unwrap();
    assert_eq!(int_of(&pod_security["runAsUser"], "runAsUser"), image_uid);
    let security = &sidecar["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(
        strings_of(&security["capabilities"]["drop"], "capabilities.drop"),
        ["ALL"]
    );

    // Config from the ConfigMap, secret from a Secret, both read-only,
    // mounted where the args and the config look for them.
    let mounts = sidecar["volumeMounts"]
        .as_vec()
        .expect("volumeMounts is a list");
    let volumes = spec["volumes"].as_vec().expect("volumes is a list");
    let volume = |name: &str| -> &Yaml {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    // The file a mounted volume puts at `path`, as (volume, item key).
    let mounted_item = |path: &str| -> (&Yaml, String) {
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(&format!("{}/", str_of(&m["mountPath"], "mountPath"))))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "{path} is mounted read-only"
        );
        let dir = str_of(&mount["mountPath"], "mountPath");
        let file = &path[dir.len() + 1..];
        let volume = volume(str_of(&mount["name"], "volumeMount name"));
        let source = if volume["configMap"].is_hash() {
            &volume["configMap"]
        } else {
            &volume["secret"]
        };
        let key = source["items"]
            .as_vec()
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| i["path"].as_str() == Some(file))
                    .map(|i| str_of(&i["key"], "item key").to_owned())
            })
            .unwrap_or_else(|| file.to_owned());
        (volume, key)
    };
    let args = strings_of(&sidecar["args"], "sidecar args");
    let config_path = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("args name --config");
    let (config_volume, config_key) = mounted_item(config_path);
    assert_eq!(
        str_of(&config_volume["configMap"]["name"], "configMap name"),
        str_of(&config_map["metadata"]["name"], "ConfigMap name")
    );
    let text = str_of(&config_map["data"][config_key.as_str()], "ConfigMap data");
    let config = ExampleConfig::parse(text, "examples/kubernetes-pod.yaml ConfigMap");
    let (secret_volume, _) = mounted_item(config.secret_file());
    assert!(
        secret_volume["secret"]["secretName"].as_str().is_some(),
        "the credential comes from a Secret"
    );

    // The proxy on the pod's loopback; health on the pod IP, where the
    // kubelet's HTTP probes arrive, at the probes' port.
    assert!(config.listen().ip().is_loopback());
    let health = config
        .config
        .health_addr()
        .expect("a health listener for the probes");
    assert!(
        !health.ip().is_loopback(),
        "kubelet probes connect to the pod IP, not to {health}"
    );
    assert_eq!(health.port(), 8182);

    // Kubernetes waits long enough for the drain.
    let grace = int_of(
        &spec["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(u64::try_from(grace).unwrap() > config.stop_secs());
}

/// A systemd unit file as (section, key, value) in file order, after
/// checking its syntax: `[Section]` headers, `Key=Value` lines, `#` and `;`
/// comments, no assignment before the first section.
fn parse_unit(text: &str, origin: &str) -> Vec<(String, String, String)> {
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{origin}:{n}: keep each setting on one line"
        );
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("{origin}:{n}: unclosed section header"));
            assert!(
                ["Unit", "Service", "Install"].contains(&name),
                "{origin}:{n}: unexpected section [{name}]"
            );
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{origin}:{n}: not Key=Value: {line}"));
        let key = key.trim();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{origin}:{n}: not a setting name: {key:?}"
        );
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("{origin}:{n}: setting before any section"));
        entries.push((section, key.to_owned(), value.trim().to_owned()));
    }
    entries
}

#[test]
fn systemd_unit_is_hardened_and_gets_its_secret_as_a_credential() {
    let unit_name = "crumb-proxy.service";
    let origin = format!("examples/{unit_name}");
    let entries = parse_unit(&read(&origin), &origin);
    let values = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match values("Service", key).as_slice() {
            [value] => value,
            other => panic!("{origin}: expected one {key}=, found {other:?}"),
        }
    };
    for section in ["Unit", "Service", "Install"] {
        assert!(
            entries.iter().any(|(s, _, _)| s == section),
            "{origin}: no [{section}] settings"
        );
    }

    // Hardening: each key with the value that makes it count.
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("UMask", "0077"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(one(key), expected, "{origin}: {key}=");
    }
    assert!(
        values("Service", "SystemCallFilter").contains(&"@system-service"),
        "{origin}: SystemCallFilter=@system-service"
    );

    // The config it starts with, shipped next to it.
    let exec = one("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        args[0].ends_with("/crumb-proxy"),
        "ExecStart runs the binary"
    );
    let config_path = args
        .iter()
        .skip_while(|a| **a != "--config")
        .nth(1)
        .expect("ExecStart names --config");
    let shipped = "examples/systemd/crumb-proxy.toml";
    assert_eq!(
        Path::new(config_path).file_name(),
        Path::new(shipped).file_name(),
        "ExecStart reads the installed {shipped}"
    );
    let config = ExampleConfig::parse(&read(shipped), shipped);
    assert!(config.listen().ip().is_loopback());

    // The secret: LoadCredential=ID:PATH puts it in $CREDENTIALS_DIRECTORY
    // (`%d`), which is /run/credentials/<unit name>; the config reads it
    // there.
    let credential = one("LoadCredential");
    let (id, source) = credential.split_once(':').expect("LoadCredential=ID:PATH");
    assert!(
        Path::new(source).is_absolute(),
        "LoadCredential source path"
    );
    assert_eq!(
        config.secret_file(),
        format!("/run/credentials/{unit_name}/{id}")
    );

    // systemd waits long enough for the drain.
    let timeout = seconds(one("TimeoutStopSec"), "TimeoutStopSec");
    assert!(
        timeout > config.stop_secs(),
        "TimeoutStopSec={timeout}s must exceed grace + drain ({}s)",
        config.stop_secs()
    );
    assert_eq!(values("Install", "WantedBy"), ["multi-user.target"]);
}
