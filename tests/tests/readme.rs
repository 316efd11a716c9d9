//! The README's runnable blocks (```` ```sh runnable ````) run as written,
//! on this host: each in a fresh directory holding the repository's
//! `config/`, with the built binary first on `PATH`, and what it promises
//! is checked (the streams it fetches arrive whole).

use ledgermesh_e2e::procs::{anvil_available, bin_path, project_root};
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_node::source::Source;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// The bodies of the blocks fenced ```` ```sh runnable ````.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh runnable") => current = Some(String::new()),
            (Some(_), "```") => out.push(current.take().expect("open block")),
            (Some(body), _) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_readme_quick_start_runs_as_written_on_one_host() {
    if !anvil_available("the README's quick start") {
        return;
    }
    let root = project_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks = runnable_blocks(&readme);
    assert_eq!(blocks.len(), 1, "the quick start is marked runnable");
    let dir = temp_dir("readme");
    std::fs::create_dir_all(dir.0.join("config")).unwrap();
    std::fs::copy(
        root.join("config/sensor.log"),
        dir.0.join("config/sensor.log"),
    )
    .unwrap();
    let script = dir.0.join("quickstart.sh");
    std::fs::write(&script, &blocks[0]).unwrap();
    let bin_dir = bin_path().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let anvil = root.join(".tools/node_modules/.bin/anvil");
    let mut child = std::process::Command::new("bash")
        .args(["-e", "-o", "pipefail"])
        .arg(&script)
        .current_dir(&dir.0)
        .env("PATH", path)
        .env(
            "LEDGERMESH_ANVIL",
            std::env::var_os("LEDGERMESH_ANVIL").unwrap_or(anvil.into()),
        )
        .env_remove("LEDGERMESH_ALLOW_PRIVATE_ADDRS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: whatever it left running is stopped below.
        .process_group(0)
        .spawn()
        .expect("bash");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = ["devchain.log", "relay.log", "provider.log"]
        .map(|f| {
            let text = std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "--- {f}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .join("\n");
    let said = format!(
        "stdout:\n{}\nstderr:\n{}\n{logs}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status =
        status.unwrap_or_else(|| panic!("the quick start did not finish in 180 s\n{said}"));
    assert!(
        status.success(),
        "the quick start failed ({status})\n{said}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("the log arrived whole"), "{said}");
    // The stranger: refused, with the reason, and nothing written.
    assert!(stdout.contains("the stranger was refused"), "{said}");
    assert!(stderr.contains("not_allowed"), "the reason is told: {said}");
    assert!(!dir
        .0
        .join("stranger")
        .read_dir()
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e
            .path()
            .join("feed")
            .metadata()
            .is_ok_and(|m| m.len() > 0)))));
    // `status` lists the provider's peers: the relay it holds a reservation on.
    let relay_log = std::fs::read_to_string(dir.0.join("relay.log")).unwrap_or_default();
    let relay_id = (relay_log.split("/p2p/").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .expect("the relay logs its address");
    let short = format!("{}…{}", &relay_id[..8], &relay_id[relay_id.len() - 6..]);
    assert!(
        stdout.contains(&short),
        "status lists the relay {short}: {said}"
    );
    // What it promised: both streams, whole, under received/<provider>/.
    let received: Vec<_> = std::fs::read_dir(dir.0.join("received")).unwrap().collect();
    assert_eq!(received.len(), 1, "one provider");
    let provider = received[0].as_ref().unwrap().path();
    let feed = Source::Random {
        len: 64 << 20,
        seed: 42,
    };
    assert_eq!(
        file_sha256(&provider.join("feed")),
        futures::executor::block_on(truth(&feed)),
        "the feed, whole"
    );
    println!(
        "README quick start: ok, {} checked\n{}",
        provider.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}
