//! The `ossc` binary against the embedded store: `ls --json`, `cp --json`,
//! the documented exit codes (not found, bad credentials, no agent, usage) and
//! shell completions.
//!
//! Each test starts its own store (signed requests required) on an ephemeral
//! port over its own temp directory, and runs the real binary with a private
//! config file and environment.

mod common;

use std::path::Path;
use std::process::Output;

use common::{data, REGION};
use ossc_core::sign::Credentials;
use ossc_core::store_server::RunningStore;

const BUCKET: &str = "models";
const AK: &str = "cli-ak";
const SK: &str = "cli-sk-secret";

fn start_store(root: &Path) -> RunningStore {
    common::start_store(
        root,
        vec![Credentials {
            access_key_id: AK.into(),
            access_key_secret: SK.into(),
            security_token: None,
        }],
    )
}

/// `(relative key under m1/, bytes)` written into the store root.
fn write_model(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        (
            "config.json".to_string(),
            b"{\"model_type\": \"qwen\"}".to_vec(),
        ),
        (
            "model-00001-of-00002.safetensors".to_string(),
            data(1, 300_000),
        ),
        (
            "sub/model-00002-of-00002.safetensors".to_string(),
            data(2, 200_001),
        ),
    ];
    common::write_files(&root.join(BUCKET).join("m1"), &files);
    files
}

/// Runs `ossc args...` with the store's endpoint and `secret` (off the tokio
/// worker, which serves the store).
async fn ossc(store: &RunningStore, dir: &Path, secret: &str, args: &[&str]) -> Output {
    let config = dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ossc"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OSS_ENDPOINT", store.endpoint_url())
        .env("OSS_REGION", REGION)
        .env("OSS_ACCESS_KEY_ID", AK)
        .env("OSS_ACCESS_KEY_SECRET", secret)
        .env("OSS_CONNECTOR_CONFIG", &config)
        .env("CONNECTOR_UDS_PATH", dir.join("no-agent.sock"));
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_cp_print_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = write_model(&root);
    let store = start_store(&root);

    let out = ossc(
        &store,
        dir.path(),
        SK,
        &["ls", "oss://models/m1/", "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["bucket"], BUCKET);
    assert_eq!(doc["prefix"], "m1/");
    assert_eq!(doc["count"], files.len());
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(doc["bytes"], total);
    let mut listed: Vec<(String, u64)> = doc["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert!(o["etag"].as_str().is_some_and(|e| !e.is_empty()), "{o}");
            assert!(o["last_modified"].as_str().is_some(), "{o}");
            (
                o["key"].as_str().unwrap().to_string(),
                o["size"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, u64)> = files
        .iter()
        .map(|(k, b)| (format!("m1/{k}"), b.len() as u64))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    let dest = dir.path().join("copy");
    let out = ossc(
        &store,
        dir.path(),
        SK,
        &["cp", "oss://models/m1/", dest.to_str().unwrap(), "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(summary["files"], files.len());
    assert_eq!(summary["bytes"], total);
    assert_eq!(summary["bytes_by_source"]["store"], total);
    assert_eq!(summary["retries"], 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["gb_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    for (rel, bytes) in &files {
        assert_eq!(&std::fs::read(dest.join(rel)).unwrap(), bytes, "{rel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_name_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    write_model(&root);
    let store = start_store(&root);

    let missing = ossc(&store, dir.path(), SK, &["ls", "oss://no-such-bucket/m1/"]).await;
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("NoSuchBucket"),
        "{}",
        stderr(&missing)
    );

    let dest = dir.path().join("copy");
    let denied = ossc(
        &store,
        dir.path(),
        "wrong-secret",
        &["cp", "oss://models/m1/", dest.to_str().unwrap()],
    )
    .await;
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("SignatureDoesNotMatch"),
        "{}",
        stderr(&denied)
    );

    let no_agent = ossc(&store, dir.path(), SK, &["status"]).await;
    assert_eq!(no_agent.status.code(), Some(6), "{}", stderr(&no_agent));
    assert!(
        stderr(&no_agent).contains("no-agent.sock"),
        "{}",
        stderr(&no_agent)
    );

    let usage = ossc(&store, dir.path(), SK, &["ls"]).await;
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    let bad_path = ossc(&store, dir.path(), SK, &["ls", "http://x/"]).await;
    assert_eq!(bad_path.status.code(), Some(2), "{}", stderr(&bad_path));

    let help = ossc(&store, dir.path(), SK, &["--help"]).await;
    assert!(help.status.success());
    assert!(
        stdout(&help).contains(ossc_peer::cli::exit_code::TABLE),
        "{}",
        stdout(&help)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_cover_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let store = start_store(&root);
    let bash = ossc(&store, dir.path(), SK, &["completions", "bash"]).await;
    assert!(bash.status.success(), "{}", stderr(&bash));
    let text = stdout(&bash);
    assert!(text.contains("complete -F"), "{text}");
    for sub in [
        "ls",
        "cp",
        "status",
        "prefetch",
        "evict",
        "agent",
        "peer",
        "completions",
    ] {
        assert!(
            text.contains(&format!("ossc,{sub})")) || text.contains(&format!("ossc__{sub})")),
            "bash completion lacks {sub}"
        );
    }
    for shell in ["zsh", "fish"] {
        let out = ossc(&store, dir.path(), SK, &["completions", shell]).await;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("prefetch"), "{shell}");
    }
    let bad = ossc(&store, dir.path(), SK, &["completions", "tcsh"]).await;
    assert_eq!(bad.status.code(), Some(2));
}
