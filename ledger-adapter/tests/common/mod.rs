//! What the anvil tests share: the project's tools, a chain per test, funded keys.
#![allow(dead_code)]

use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let p = root().join(".tools/node_modules/.bin").join(name);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {} missing and CI=true: run scripts/setup.sh",
            p.display()
        );
    }
    eprintln!("SKIP {test}: {name} not installed; run scripts/setup.sh");
    None
}

/// An anvil on a free port, killed on drop.
pub struct Anvil {
    _child: tokio::process::Child,
    /// Its JSON-RPC URL.
    pub url: String,
}

pub async fn anvil(test: &str) -> Option<Anvil> {
    let bin = tool("anvil", test)?;
    let mut child = tokio::process::Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", "0", "--accounts", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("anvil starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("anvil prints its address");
            if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                return format!("http://{}", addr.trim());
            }
        }
    })
    .await
    .expect("anvil listens within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(Anvil { _child: child, url })
}

pub async fn funded(url: &str) -> PrivateKeySigner {
    let signer = PrivateKeySigner::random();
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap());
    let _: serde_json::Value = provider
        .raw_request(
            "anvil_setBalance".into(),
            (signer.address(), U256::from(10u64).pow(U256::from(20u64))),
        )
        .await
        .unwrap();
    signer
}
