//! The deployment files stay in step with the daemon: the scale-out configuration
//! (`deploy/k8s/backflow.yaml`, also mounted by `deploy/compose.yaml`), with every
//! `BACKFLOW__…` override the compose file and the Kubernetes deployment set, loads and
//! validates the shipped pipelines; the kustomization names files that exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(NAME, value)` of every `BACKFLOW__…` variable set in a compose or Kubernetes file.
fn overrides(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).expect("read deploy file");
    let compose =
        regex::Regex::new(r##"^\s*(BACKFLOW__[A-Z0-9_]+):\s*"?([^"#\s]+)"?"##).expect("re");
    let k8s =
        regex::Regex::new(r#"name:\s*(BACKFLOW__[A-Z0-9_]+),\s*value:\s*"([^"]*)""#).expect("re");
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| compose.captures(l).or_else(|| k8s.captures(l)))
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn validate_with(env: &[(String, String)]) -> std::process::Output {
    let root = repo();
    Command::new(env!("CARGO_BIN_EXE_backflow"))
        .arg("--config")
        .arg(root.join("deploy/k8s/backflow.yaml"))
        .arg("validate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BACKFLOW__PIPELINES_DIR", root.join("pipelines"))
        .env("BACKFLOW__SCHEMAS_DIR", root.join("schemas"))
        .env("BACKFLOW__DATA_DIR", std::env::temp_dir())
        .output()
        .expect("run backflow validate")
}

#[test]
fn the_scale_out_config_and_its_overrides_load_and_validate() {
    let root = repo();
    for file in ["deploy/compose.yaml", "deploy/k8s/deployment.yaml"] {
        let env = overrides(&root.join(file));
        assert!(
            env.iter()
                .any(|(k, _)| k == "BACKFLOW__JOURNAL__KAFKA__BROKERS"),
            "{file} points the collectors at its broker: {env:?}"
        );
        let out = validate_with(&env);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // The check can fail: an unknown key is refused.
    let out = validate_with(&[("BACKFLOW__JOURNAL__KAFKA__BROKER".into(), "x:1".into())]);
    assert!(!out.status.success(), "{}", stdout(&out));
}

#[test]
fn the_kustomization_and_compose_name_files_that_exist() {
    let root = repo();
    let k = std::fs::read_to_string(root.join("deploy/k8s/kustomization.yaml")).expect("read");
    let mut named = 0;
    for line in k.lines() {
        let item = line.trim().trim_start_matches("- ").trim();
        if item.ends_with(".yaml") && !item.contains(' ') {
            assert!(root.join("deploy/k8s").join(item).exists(), "{item}");
            named += 1;
        }
    }
    assert!(named >= 5, "resources and the config map: {named}");
    let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).expect("read");
    assert!(compose.contains("./k8s/backflow.yaml:/etc/backflow/backflow.yaml"));
    assert!(compose.contains("dockerfile: deploy/Dockerfile"));
    assert!(root.join("deploy/Dockerfile").exists());
}
