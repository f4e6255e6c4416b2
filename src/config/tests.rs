//! Tests of configuration parsing and validation.

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("crumb-proxy-config-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("pw"), "s3cr3t-pw\n").unwrap();
        fs::write(dir.join("token"), "11aa22bb33cc\r\n").unwrap();
        fs::write(dir.join("empty"), "\n").unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = r#"
    [upstream]
    url = "http://127.0.0.1:8080/jenkins/"
    [credentials]
    username = "alice"
"#;

fn load(dir: &Dir, extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!("{BASE}\n{extra}"), &dir.0)
}

#[test]
fn defaults_and_secret_file_relative_to_config() {
    let dir = Dir::new("defaults");
    let c = load(&dir, "password_file = \"pw\"").unwrap();
    assert_eq!(
        c.listen.addr,
        ListenAddr::Tcp("127.0.0.1:8181".parse().unwrap())
    );
    assert_eq!(c.listen.socket_mode, 0o600);
    assert!(c.policy.allowed_hosts.contains("localhost"));
    assert!(!c.policy.read_only);
    assert_eq!(c.crumb.mode, CrumbMode::Auto);
    assert_eq!(c.crumb.max_idle, Duration::from_secs(1500));
    assert_eq!(c.crumb.replay_body_max_bytes, 1 << 20);
    assert_eq!(c.credentials.kind(), SecretKind::Password);
    // base64("alice:s3cr3t-pw"): the trailing newline is not part of it.
    assert_eq!(
        c.credentials.current().0.authorization().clone(),
        "Basic YWxpY2U6czNjcjN0LXB3"
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cr3t-pw") && !debug.contains("YWxpY2U6czNjcjN0LXB3"));
}

#[test]
fn token_with_crlf_is_trimmed() {
    let dir = Dir::new("token");
    let c = load(&dir, "api_token_file = \"token\"").unwrap();
    assert_eq!(c.credentials.kind(), SecretKind::ApiToken);
    assert_eq!(
        c.credentials.current().0.authorization().clone(),
        "Basic YWxpY2U6MTFhYTIyYmIzM2Nj"
    );
}

/// Each refused configuration names the key (and the value where there
/// is one) in its message.
#[test]
fn errors_name_key_and_fix() {
    let dir = Dir::new("errors");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "",
            "password = \"x\"",
            &["credentials.password", "password_file"],
        ),
        (
            "",
            "api_token = \"x\"",
            &["credentials.api_token", "api_token_env"],
        ),
        ("", "", &["credentials.password_file", "api_token_file"]),
        (
            "",
            "password_file = \"pw\"\napi_token_env = \"X\"",
            &["password_file and api_token_env"],
        ),
        (
            "",
            "password_file = \"missing\"",
            &["credentials.password_file", "missing", "create it"],
        ),
        (
            "",
            "password_file = \"empty\"",
            &["credentials.password_file", "empty"],
        ),
        (
            "",
            "password_env = \"CRUMB_PROXY_TEST_SURELY_UNSET\"",
            &["CRUMB_PROXY_TEST_SURELY_UNSET", "not set"],
        ),
        (
            "[listen]\naddress = \"8181\"",
            "password_file = \"pw\"",
            &["listen.address", "\"8181\"", "bare port"],
        ),
        (
            "[listen]\naddress = \"0.0.0.0:8181\"",
            "password_file = \"pw\"",
            &["listen.address", "0.0.0.0:8181", "allow_remote"],
        ),
        (
            "[listen]\naddress = \"nowhere\"",
            "password_file = \"pw\"",
            &["listen.address", "HOST:PORT"],
        ),
        (
            "[crumb]\nmode = \"sometimes\"",
            "password_file = \"pw\"",
            &["crumb.mode", "sometimes", "always"],
        ),
        (
            "[crumb]\nmax_idle_secs = 0",
            "password_file = \"pw\"",
            &["crumb.max_idle_secs", "between 1 and 86400"],
        ),
        (
            "[listen]\nadress = \"x\"",
            "password_file = \"pw\"",
            &["adress"],
        ),
    ];
    for (before, creds, needles) in cases {
        let text = format!("{before}\n{BASE}\n{creds}");
        let err = Config::from_toml_str(&text, &dir.0)
            .unwrap_err()
            .to_string();
        for needle in *needles {
            assert!(err.contains(needle), "{creds:?}: {err:?} lacks {needle:?}");
        }
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

/// A rule that could never match, or never take effect, is refused
/// with the rule's index and why (a filter that silently does nothing
/// is how kubectl's `--reject-methods` failed, anchors.md §3.1).
#[test]
fn rules_that_can_never_match_are_config_errors() {
    let dir = Dir::new("rules");
    let rule = |body: &str| format!("password_file = \"pw\"\n[[policy.rules]]\n{body}");
    for (body, needles) in [
        ("action = \"allow\"\npath = \"job/x\"", &["policy.rules[0]", "start with /"][..]),
        ("action = \"deny\"\npath = \"/Job/x\"", &["lower case", "/job/x"]),
        ("action = \"deny\"\npath = \"/job/x*\"", &["whole segments"]),
        ("action = \"deny\"\npath = \"/job/../x\"", &["`..`"]),
        ("action = \"deny\"\npath = \"/a//b\"", &["empty segment"]),
        ("action = \"deny\"\nmethods = []\npath = \"/x\"", &["methods = []"]),
        ("action = \"deny\"\nmethods = [\"post\"]\npath = \"/x\"", &["\"post\"", "case-sensitive", "POST"]),
        ("action = \"deny\"\nmethods = [\"CONNECT\"]\npath = \"/x\"", &["\"CONNECT\"", "not one the proxy forwards"]),
        ("action = \"deny\"\nmethods = [\"PROPFIND\"]\npath = \"/x\"", &["\"PROPFIND\""]),
        ("action = \"deny\"\nmethods = [\"TRACE\"]\npath = \"/x\"", &["\"TRACE\""]),
        // Patterns match the path Jenkins binds: an alias never matches.
        ("action = \"deny\"\npath = \"/manage/scripttext\"", &["binds /manage/scripttext as /scripttext"]),
        ("action = \"deny\"\npath = \"/manage/**\"", &["binds /manage/x as /x"]),
        ("action = \"deny\"\npath = \"/view/all/job/x/**\"", &["as /job/x/x"]),
        ("action = \"deny\"\npath = \"/me/**\"", &["as /user/alice/x"]),
        ("action = \"deny\"\npath = \"/computer/(master)/**\"", &["/computer/(built-in)/x"]),
        ("action = \"block\"\npath = \"/x\"", &["\"allow\" or \"deny\""]),
        (
            "action = \"deny\"\npath = \"/**\"\n[[policy.rules]]\naction = \"allow\"\npath = \"/x\"",
            &["policy.rules[1]", "policy.rules[0]", "never match"],
        ),
        (
            "action = \"deny\"\nmethods = [\"POST\", \"PUT\"]\npath = \"/x\"\n[[policy.rules]]\naction = \"allow\"\nmethods = [\"POST\"]\npath = \"/x\"",
            &["policy.rules[1]", "comes first"],
        ),
    ] {
        let err = load(&dir, &rule(body)).unwrap_err().to_string();
        for needle in needles {
            assert!(err.contains(needle), "{body:?}: {err:?} lacks {needle:?}");
        }
    }
    let err = load(&dir, "password_file = \"pw\"\n[policy]\nread_only = true\n[[policy.rules]]\naction = \"allow\"\nmethods = [\"POST\"]\npath = \"/x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("read_only"), "{err}");
    // Sound rules load, in order.
    let c = load(&dir, &rule("action = \"allow\"\nmethods = [\"POST\"]\npath = \"/scripttext\"\n[[policy.rules]]\naction = \"deny\"\npath = \"/job/*/build/\"")).unwrap();
    assert_eq!(c.policy.rules.len(), 2);
    assert_eq!(c.policy.rules[1].name, "policy.rules[1]");
    // Resolved forms, with wildcards, load.
    for path in [
        "/job/**/build",
        "/view/*/**",
        "/user/*/descriptorbyname/**",
        "/computer/*/**",
        "/**",
        "/",
    ] {
        let c = load(
            &dir,
            &rule(&format!("action = \"deny\"\npath = \"{path}\"")),
        )
        .unwrap();
        assert_eq!(c.policy.rules.len(), 1, "{path}");
    }
}

#[test]
fn tls_health_and_shutdown_keys_are_checked() {
    let dir = Dir::new("tls-keys");
    let with = |upstream: &str, rest: &str| {
        format!("[upstream]\nurl = \"{upstream}\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\"\n{rest}")
    };
    for (text, needles) in [
        (with("http://ci/", ""), &[][..]),
        (
            String::from("[upstream]\nurl = \"http://ci/\"\nca_file = \"ca.pem\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
            &["only apply to an https:// upstream"][..],
        ),
        (
            String::from("[upstream]\nurl = \"https://ci/\"\nclient_cert_file = \"c.pem\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
            &["upstream.client_key_file", "needs its private key"],
        ),
        (
            String::from("[upstream]\nurl = \"https://ci/\"\nca_file = \"c.pem\"\ndanger_accept_invalid_certs = true\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""),
            &["danger_accept_invalid_certs", "never used"],
        ),
        (with("http://ci/", "[health]\naddress = \"8182\""), &["health.address"]),
    ] {
        match Config::from_toml_str(&text, &dir.0) {
            Ok(_) => assert!(needles.is_empty(), "{text} loaded"),
            Err(e) => {
                let e = e.to_string();
                assert!(!needles.is_empty(), "{text}: {e}");
                for needle in needles {
                    assert!(e.contains(needle), "{e} lacks {needle}");
                }
            }
        }
    }
    let c = Config::from_toml_str(
        &with(
            "http://ci/",
            "[health]\naddress = \"\"\n[shutdown]\ngrace_secs = 5",
        ),
        &dir.0,
    )
    .unwrap();
    assert_eq!(c.health_addr(), None);
    assert_eq!(c.shutdown.grace, Duration::from_secs(5));
    assert_eq!(c.shutdown.drain, Duration::from_secs(30));
    let c = Config::from_toml_str(&with("http://ci/", ""), &dir.0).unwrap();
    assert_eq!(c.health_addr(), Some("127.0.0.1:8182".parse().unwrap()));
}

#[test]
fn listen_extras_are_checked() {
    let dir = Dir::new("listen-extras");
    for (listen, needle) in [
        ("allowed_hosts = [\"http://x\"]", "listen.allowed_hosts"),
        ("allowed_hosts = [\"x:80\"]", "without scheme or port"),
        ("socket_mode = \"rw\"", "listen.socket_mode"),
        ("address = \"unix:\"", "name the socket file"),
        (
            "client_token_file = \"token\"\nclient_token_env = \"X\"",
            "not both",
        ),
    ] {
        let err = load(&dir, &format!("password_file = \"pw\"\n[listen]\n{listen}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{listen}: {err}");
    }
    let err = load(
        &dir,
        "password_file = \"pw\"\n[policy]\nallowed_origins = [\"localhost:3000\"]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("policy.allowed_origins"), "{err}");
    let err = load(
        &dir,
        "password_file = \"pw\"\n[limits]\nmax_header_bytes = 100",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("limits.max_header_bytes") && err.contains("8192"),
        "{err}"
    );
}

#[test]
fn loose_secret_file_gives_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Dir::new("loose");
    let pw = dir.0.join("pw");
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o640)).unwrap();
    let c = load(&dir, "password_file = \"pw\"").unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].contains("chmod 600") && c.warnings()[0].contains("pw"));
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&dir, "password_file = \"pw\"")
        .unwrap()
        .warnings()
        .is_empty());
}

#[test]
fn upstream_url_is_checked() {
    let dir = Dir::new("upstream");
    for (url, needle) in [
        ("ftp://x/", "http"),
        ("http://u:p@ci/", "credentials"),
        ("http://ci/?a=b", "query"),
        ("/jenkins", "absolute"),
    ] {
        let text = format!(
            "[upstream]\nurl = \"{url}\"\n[credentials]\nusername = \"a\"\npassword_file = \"pw\""
        );
        let err = Config::from_toml_str(&text, &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream.url") && err.contains(needle),
            "{err}"
        );
    }
}

#[test]
fn remote_allowed_explicitly_and_localhost_accepted() {
    let dir = Dir::new("remote");
    let err = load(
        &dir,
        "password_file = \"pw\"\n[listen]\naddress = \"0.0.0.0:9\"\nallow_remote = true",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("client token"), "{err}");
    let c = load(
        &dir,
        "password_file = \"pw\"\n[listen]\naddress = \"0.0.0.0:9\"\nallow_remote = true\nclient_token_file = \"token\"",
    )
    .unwrap();
    assert_eq!(c.listen.addr, ListenAddr::Tcp("0.0.0.0:9".parse().unwrap()));
    assert!(c.policy.client_token.is_some());
    assert!(c.policy.allowed_hosts.contains("0.0.0.0"));
    let c = load(
        &dir,
        "password_file = \"pw\"\n[listen]\naddress = \"localhost:0\"",
    )
    .unwrap();
    assert_eq!(
        c.listen.addr,
        ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
    );
    let c = load(
        &dir,
        "password_file = \"pw\"\n[listen]\naddress = \"unix:proxy.sock\"\nsocket_mode = \"0660\"",
    )
    .unwrap();
    assert_eq!(c.listen.addr, ListenAddr::Unix(dir.0.join("proxy.sock")));
    assert_eq!(c.listen.socket_mode, 0o660);
}

#[test]
fn overrides_win_and_replace_the_secret_source() {
    let dir = Dir::new("overrides");
    let file = dir.0.join("c.toml");
    fs::write(
        &file,
        format!("{BASE}\npassword_file = \"pw\"\n[crumb]\nmode = \"always\""),
    )
    .unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        api_token_file: Some(dir.0.join("token")),
        crumb_mode: Some("never".into()),
        user: Some("bob".into()),
        ..Overrides::default()
    };
    let c = Config::load(Some(&file), &overrides).unwrap();
    assert_eq!(
        c.listen.addr,
        ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(c.credentials.kind(), SecretKind::ApiToken);
    assert_eq!(c.credentials.username(), "bob");
    assert_eq!(c.crumb.mode, CrumbMode::Never);
}

/// A secret file must be a regular file (or a symlink to one) of at most
/// 64 KiB: a FIFO would hang the proxy, `/dev/zero` would be read until
/// memory runs out, a large file is the wrong file. Each is refused at
/// once, naming the key and the fix.
#[cfg(unix)]
#[test]
fn secret_files_must_be_small_regular_files() {
    let dir = Dir::new("secret-kinds");
    let fifo = dir.0.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(made.success());
    fs::write(dir.0.join("big"), vec![b'x'; 5 * 1024 * 1024]).unwrap();
    fs::create_dir(dir.0.join("adir")).unwrap();
    std::os::unix::fs::symlink(dir.0.join("pw"), dir.0.join("link")).unwrap();
    let path = dir.0.clone();
    // On a thread, so that a hang fails the test instead of stalling it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = Dir(path);
        let results: Vec<(String, Result<(), String>)> =
            ["fifo", "/dev/zero", "big", "adir", "link"]
                .iter()
                .map(|file| {
                    let result = load(&dir, &format!("password_file = \"{file}\""))
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    ((*file).to_owned(), result)
                })
                .collect();
        std::mem::forget(dir);
        tx.send(results).unwrap();
    });
    let results = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("every secret file was judged without hanging");
    for (file, result) in results {
        match file.as_str() {
            "link" => assert!(result.is_ok(), "{file}: {result:?}"),
            "fifo" | "/dev/zero" => {
                let err = result.unwrap_err();
                assert!(
                    err.contains("credentials.password_file") && err.contains("regular file"),
                    "{err}"
                );
            }
            "adir" => assert!(result.unwrap_err().contains("a directory")),
            _ => {
                let err = result.unwrap_err();
                assert!(err.contains("65536 bytes"), "{file}: {err}");
            }
        }
    }
    assert!(crate::config::read_secret_file(&dir.0.join("fifo"))
        .unwrap_err()
        .contains("regular file"));
}

/// A value of the wrong type is one line that names the full key, what it
/// expected, what it got and the fix.
#[test]
fn type_errors_name_the_full_key() {
    let dir = Dir::new("types");
    for (extra, needles) in [
        (
            "[limits]\nmax_connections = \"x\"",
            &[
                "`limits.max_connections`: expected a whole number, got string \"x\"",
                "without quotes",
            ][..],
        ),
        (
            "[limits]\nidle_timeout_secs = \"5s\"",
            &[
                "`limits.idle_timeout_secs`: expected a whole number of seconds",
                "300",
            ],
        ),
        (
            "[crumb]\nreplay_budget_bytes = \"64MB\"",
            &["a whole number of bytes", "1048576"],
        ),
        (
            "[listen]\nallow_remote = \"yes\"",
            &["`listen.allow_remote`: expected true or false"],
        ),
        (
            "[policy]\nallowed_origins = \"http://x\"",
            &["`policy.allowed_origins`: expected a list"],
        ),
        ("[limits]\nmax_connections = -1", &["got integer -1"]),
    ] {
        let err = load(&dir, &format!("password_file = \"pw\"\n{extra}"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err:?}");
        for needle in needles {
            assert!(err.contains(needle), "{extra:?}: {err:?} lacks {needle:?}");
        }
    }
}

/// Every numeric key has a range, checked before anything starts: values
/// that once crashed the proxy (a semaphore of 2^61 connections, deadlines
/// `now + u64::MAX seconds`) are refused with the key, the range and the
/// default.
#[test]
fn numbers_outside_their_range_are_refused() {
    let dir = Dir::new("ranges");
    for (section, key, value) in [
        ("limits", "max_connections", "2305843009213693952"),
        ("limits", "max_connections", "0"),
        ("limits", "idle_timeout_secs", "9223372036854775807"),
        ("limits", "header_read_timeout_secs", "9223372036854775807"),
        ("limits", "max_header_bytes", "100"),
        ("crumb", "max_idle_secs", "18446744073709551615"),
        ("crumb", "replay_body_max_bytes", "1099511627776"),
        ("shutdown", "drain_secs", "18446744073709551615"),
        ("shutdown", "grace_secs", "86401"),
    ] {
        let err = load(
            &dir,
            &format!("password_file = \"pw\"\n[{section}]\n{key} = {value}"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("`{section}.{key}` = \"{value}\": must be between"))
                && err.contains("the default is"),
            "{err}"
        );
    }
    // `[upstream]` is in the base config already: a whole one here.
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:8080/\"\npool_idle_timeout_secs = {}\n\
         [credentials]\nusername = \"a\"\npassword_file = \"pw\"\n",
        u64::MAX
    );
    let err = Config::from_toml_str(&text, &dir.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("upstream.pool_idle_timeout_secs"), "{err}");
    // README.md documents every range as it is.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (key, least, most, _) in crate::config::RANGES {
        assert!(least <= most, "{key}");
        assert!(
            readme.contains(&format!("| `{key}` | {least} | {most}")),
            "README.md's range table lacks `{key}` {least}..={most}"
        );
    }
}

/// A fuzzer for the loader: the example configuration with one key set to
/// a value of any type (or removed, or a key added that no section has),
/// for a fixed number of cases.
mod fuzz {
    use proptest::prelude::*;
    use toml::{Table, Value};

    use super::*;

    const EXAMPLE: &str = include_str!("../../config/crumb-proxy.example.toml");

    /// The example, with a password file that exists in `dir`.
    fn example(dir: &Dir) -> Table {
        let mut table: Table = EXAMPLE.parse().unwrap();
        let credentials = table["credentials"].as_table_mut().unwrap();
        credentials.insert(
            "password_file".into(),
            Value::String(dir.0.join("pw").display().to_string()),
        );
        table
    }

    /// Every `section.key` of the example, with its value.
    fn leaves(table: &Table) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (section, keys) in table {
            for (key, value) in keys.as_table().unwrap() {
                out.push((section.clone(), key.clone(), value.clone()));
            }
        }
        out
    }

    #[derive(Debug, Clone)]
    enum Change {
        Set(usize, Value),
        Remove(usize),
        Unknown(usize),
    }

    fn value() -> impl Strategy<Value = Value> {
        let int = prop_oneof![
            -2i64..70_000,
            Just(i64::MAX),
            Just(i64::MIN),
            Just(1 << 30),
            Just((1 << 30) + 1),
            Just(86_400),
            Just(86_401),
            Just(1 << 36),
            Just(2_305_843_009_213_693_952),
        ]
        .prop_map(Value::Integer);
        let text = prop::sample::select(vec![
            "",
            "x",
            "5s",
            "0600",
            "0777",
            "auto",
            "never",
            "always",
            "http://127.0.0.1:1/",
            "127.0.0.1:0",
            "unix:/tmp/x.sock",
            "[::1]:80",
            "ci.example.com",
            "GET",
        ])
        .prop_map(|s| Value::String(s.into()));
        prop_oneof![
            4 => int,
            3 => text,
            1 => any::<bool>().prop_map(Value::Boolean),
            1 => (-1e9f64..1e9).prop_map(Value::Float),
            1 => prop::collection::vec(prop_oneof![
                (0i64..10).prop_map(Value::Integer),
                prop::sample::select(vec!["localhost", "*", "http://x", "GET"])
                    .prop_map(|s| Value::String(s.into())),
            ], 0..3)
            .prop_map(Value::Array),
            1 => Just(Value::Table(Table::new())),
        ]
    }

    fn change(leaves: usize, sections: usize) -> impl Strategy<Value = Change> {
        prop_oneof![
            6 => (0..leaves, value()).prop_map(|(i, v)| Change::Set(i, v)),
            1 => (0..leaves).prop_map(Change::Remove),
            1 => (0..sections).prop_map(Change::Unknown),
        ]
    }

    /// The one rule between two keys: the replay budget holds at least
    /// one body of the largest size kept (the example's values are 1 MiB
    /// and 64 MiB).
    fn fits_the_others(key: &str, n: u64) -> bool {
        match key {
            "crumb.replay_budget_bytes" => n >= 1 << 20,
            "crumb.replay_body_max_bytes" => n <= 64 << 20,
            _ => true,
        }
    }

    fn same_type(a: &Value, b: &Value) -> bool {
        std::mem::discriminant(a) == std::mem::discriminant(b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The loader never panics; every refusal is one line that names
        /// the key; a number is accepted exactly when it is in the key's
        /// documented range; a value of another type is always refused.
        #[test]
        fn any_one_change_is_accepted_or_named(choice in change(22, 8)) {
            let dir = Dir::new("fuzz");
            let mut table = example(&dir);
            let all = leaves(&table);
            let sections: Vec<String> = table.keys().cloned().collect();
            prop_assume!(all.len() >= 22 && sections.len() >= 8);
            let (named, expect): (String, Option<bool>) = match &choice {
                Change::Set(i, v) => {
                    let (section, key, old) = &all[*i];
                    table[section].as_table_mut().unwrap().insert(key.clone(), v.clone());
                    let full = format!("{section}.{key}");
                    let expect = match (v, RANGES.iter().find(|(k, ..)| *k == full)) {
                        _ if !same_type(old, v) => Some(false),
                        (Value::Integer(n), Some((_, least, most, _))) => {
                            Some(u64::try_from(*n).is_ok_and(|n| {
                                (*least..=*most).contains(&n) && fits_the_others(&full, n)
                            }))
                        }
                        _ => None,
                    };
                    (full, expect)
                }
                Change::Remove(i) => {
                    let (section, key, _) = &all[*i];
                    table[section].as_table_mut().unwrap().remove(key);
                    (format!("{section}.{key}"), None)
                }
                Change::Unknown(i) => {
                    let section = &sections[*i];
                    table[section].as_table_mut().unwrap().insert("zzq_unknown".into(), Value::Integer(1));
                    ("zzq_unknown".to_owned(), Some(false))
                }
            };
            let text = toml::to_string(&table).unwrap();
            let result = Config::from_toml_str(&text, &dir.0);
            if let Err(e) = &result {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "{choice:?}: {message}");
                let key = named.rsplit('.').next().unwrap();
                prop_assert!(message.contains(key), "{choice:?}: {message}");
                if let Change::Set(..) = choice {
                    prop_assert!(message.contains(&named), "{choice:?}: {message}");
                }
            }
            if let Some(ok) = expect {
                prop_assert_eq!(result.is_ok(), ok, "{:?}: {:?}", choice, result.err().map(|e| e.to_string()));
            }
        }
    }
}
