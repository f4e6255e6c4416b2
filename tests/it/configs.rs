//! Every example config in `config/` parses and validates.

use std::path::Path;

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "example-secret\n").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // Absolute secret paths (Docker secrets) point at a test file; the
        // rest of each file is parsed as written.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/run/secrets/jenkins-password", secret.to_str().unwrap());
        if let Err(e) = crumb_proxy::Config::from_toml_str(&text, &dir) {
            panic!("{}: {e}", path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "only {checked} configs found in {}",
        dir.display()
    );
}
