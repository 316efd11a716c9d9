//! Live streams over the real chain, separate processes: an `exec:` source
//! read once and fanned out to several buyers from the provider's ring,
//! chunks signed and verified, buyers that fall behind cut (or skipped
//! ahead), offsets that left the ring refused `gone`, altered chunks caught
//! and never written, and `--out -` writing exactly the stream to stdout.

use ledgermesh_e2e::chain::*;
use ledgermesh_e2e::procs::*;
use serde_json::Value;
use std::path::Path;

/// Prints 0, 1, 2, … one per line, pausing 10 ms every `burst` lines.
fn counter(burst: u32) -> String {
    format!(
        "ticks=exec:i=0; while :; do echo $i; i=$((i+1)); if [ $((i % {burst})) -eq 0 ]; then sleep 0.01; fi; done"
    )
}

/// The complete lines of `bytes` as numbers: the first and last lines may
/// be cut by where the buyer joined and stopped, so they are dropped.
fn whole_lines(bytes: &[u8]) -> Vec<u64> {
    let text = std::str::from_utf8(bytes).expect("digits and newlines");
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop();
    if !lines.is_empty() {
        lines.remove(0);
    }
    lines
        .iter()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect()
}

/// Asserts that `nums` is a run of consecutive numbers; returns its first.
fn assert_contiguous(who: &str, nums: &[u64]) -> u64 {
    assert!(nums.len() > 100, "{who}: only {} lines", nums.len());
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{who}: {} then {}", w[0], w[1]);
    }
    nums[0]
}

fn stream_done(p: &mut Proc) -> Value {
    p.matching(|v| event_is(v, "stream_done"))
        .pop()
        .unwrap_or_else(|| panic!("{}: no stream_done", p.name))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn an_exec_feed_reaches_three_buyers_each_a_verified_contiguous_run_and_a_gone_offset_is_refused() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-fanout") else {
        return;
    };
    let feed = counter(50);
    let (mut p, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &[&feed],
        &["--live-buffer", "16K"],
    );
    let want = vec![format!("{pid}/ticks")];
    let mut buyers: Vec<_> = (0..3)
        .map(|i| {
            consumer_with(
                &dir,
                &format!("buyer-{i}"),
                &chain,
                1 + i,
                &relay_addr,
                &want,
                &["--until", "40K"],
            )
        })
        .collect();
    let mut ranges = vec![];
    for (c, out) in buyers.iter_mut() {
        assert_eq!(c.wait_exit(T), 0, "{} failed", c.name);
        let done = stream_done(c);
        assert_eq!(done["bytes"], 40 * 1024, "{}: --until 40K", c.name);
        assert_eq!(done["verified"], true);
        let live = &done["live"];
        assert!(live["chunks"].as_u64().unwrap() > 0);
        assert_eq!(live["gaps"], 0);
        let from = live["from_offset"].as_u64().unwrap();
        let to = live["to_offset"].as_u64().unwrap();
        assert_eq!(to - from, 40 * 1024);
        let bytes = read(&out.join(&pid).join("ticks"));
        assert_eq!(bytes.len(), 40 * 1024);
        assert_contiguous(&c.name, &whole_lines(&bytes));
        ranges.push((from, bytes));
    }
    // Where two buyers' runs overlap, they hold the same bytes at the same
    // offsets: one source, read once.
    let mut overlaps = 0;
    for (i, (a0, a)) in ranges.iter().enumerate() {
        for (b0, b) in &ranges[i + 1..] {
            let lo = (*a0).max(*b0);
            let hi = (a0 + a.len() as u64).min(b0 + b.len() as u64);
            if lo < hi {
                overlaps += 1;
                let pa = &a[(lo - a0) as usize..(hi - a0) as usize];
                let pb = &b[(lo - b0) as usize..(hi - b0) as usize];
                assert!(pa == pb, "the overlap {lo}..{hi} differs");
            }
        }
    }
    println!(
        "LIVE fan-out: 3 buyers, {overlaps} overlapping pairs; joined at {:?}",
        ranges.iter().map(|r| r.0).collect::<Vec<_>>()
    );

    // The ring holds 16 KiB and the feed has run past it: offset 0 is gone.
    let (mut late, _) = consumer_with(
        &dir,
        "late",
        &chain,
        5,
        &relay_addr,
        &want,
        &["--from", "0", "--until", "1K"],
    );
    assert_eq!(late.wait_exit(T), 1, "joining at a gone offset fails");
    let refused = late
        .matching(|v| event_is(v, "error") && v["reason"] == "gone")
        .pop()
        .expect("refused gone");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("the earliest held is"),
        "{refused}"
    );
    // The provider served the first three and is still up.
    let served = p.matching(|v| event_is(v, "stream_served"));
    assert!(served.len() >= 3, "{served:?}");
}

/// A consumer writing its one stream to stdout (`--out -`), its events to a
/// file; the test decides when (and whether) stdout is read.
struct Piped {
    name: String,
    child: std::process::Child,
    events: std::path::PathBuf,
}

impl Piped {
    fn start(
        dir: &ledgermesh_e2e::TempDir,
        name: &str,
        chain: &Chain,
        key_index: usize,
        relay: &str,
        want: &str,
        extra: &[&str],
    ) -> (Self, String) {
        let (key, id) = keygen(&dir.0, name);
        let events = dir.0.join(format!("{name}-events.jsonl"));
        let log = std::fs::File::create(dir.0.join(format!("{name}.log"))).unwrap();
        let child = std::process::Command::new(bin_path())
            .current_dir(&dir.0)
            .args([
                "consume",
                "--key",
                &key,
                "--ledger",
                &chain.spec,
                "--ledger-key",
                &chain.keys[key_index],
                "--relay",
                relay,
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--out",
                "-",
                "--events",
                events.to_str().unwrap(),
                "--want",
                want,
            ])
            .args(extra)
            .env("RUST_LOG", "info,ledgermesh_node=debug")
            .env("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start consumer");
        (
            Self {
                name: name.into(),
                child,
                events,
            },
            id,
        )
    }

    /// Reads stdout to its end in a thread.
    fn drain(&mut self) -> std::thread::JoinHandle<Vec<u8>> {
        let mut out = self.child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut all).expect("read stdout");
            all
        })
    }

    fn wait(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + T;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: did not exit",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A generator of 0, 1, 2, … at about 1.7 MB/s, in bursts of 5000 lines.
fn fast_counter(dir: &Path) -> String {
    let script = dir.join("counter.py");
    std::fs::write(
        &script,
        "import sys, time\ni = 0\nwhile True:\n    sys.stdout.write(''.join(f'{n}\\n' for n in range(i, i + 5000)))\n    sys.stdout.flush()\n    i += 5000\n    time.sleep(0.02)\n",
    )
    .unwrap();
    format!("ticks=exec:exec python3 {}", script.display())
}

#[test]
fn a_buyer_that_stops_reading_is_cut_or_skips_ahead_and_the_others_keep_up() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-slow") else {
        return;
    };
    let feed = fast_counter(&dir.0);
    let (mut p, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &[&feed],
        &["--live-buffer", "256K", "--write-stall-secs", "120"],
    );
    let want = format!("{pid}/ticks");
    // Two buyers whose stdout nobody reads: their buffers fill, they stop
    // taking chunks, and the ring moves past them.
    let (mut cut, cut_id) = Piped::start(
        &dir,
        "stuck",
        &chain,
        1,
        &relay_addr,
        &want,
        &["--until", "2M"],
    );
    let (mut skip, skip_id) = Piped::start(
        &dir,
        "skipper",
        &chain,
        2,
        &relay_addr,
        &want,
        &["--until", "2M", "--skip-ahead"],
    );
    // One that reads all along.
    let (mut keeper, out) = consumer_with(
        &dir,
        "keeper",
        &chain,
        3,
        &relay_addr,
        std::slice::from_ref(&want),
        &["--until", "12M"],
    );
    for id in [&cut_id, &skip_id] {
        let ev = p.wait_for("too_slow", T, |v| {
            event_is(v, "error") && v["reason"] == "too_slow" && v["peer_id"] == id.as_str()
        });
        assert!(
            ev["detail"].as_str().unwrap().contains("fell behind"),
            "{ev}"
        );
    }
    // The keeper was never held up by them.
    assert_eq!(keeper.wait_exit(T), 0);
    let done = stream_done(&mut keeper);
    assert_eq!(done["live"]["gaps"], 0);
    assert_contiguous("keeper", &whole_lines(&read(&out.join(&pid).join("ticks"))));
    println!(
        "LIVE keeper lag ms p50 {} p99 {} max {}",
        done["live"]["lag_ms_p50"], done["live"]["lag_ms_p99"], done["live"]["lag_ms_max"]
    );

    // Now they read again. Without --skip-ahead: cut, and told why.
    let cut_bytes = cut.drain();
    assert_eq!(cut.wait(), 1, "cut without --skip-ahead");
    let said = cut.events();
    assert!(
        said.iter()
            .any(|v| event_is(v, "error") && v["reason"] == "too_slow"),
        "{said:?}"
    );
    let got = cut_bytes.join().unwrap();
    assert_contiguous("stuck", &whole_lines(&got));

    // With --skip-ahead: a gap to the live edge, reported, then on to 2M.
    let skip_bytes = skip.drain();
    assert_eq!(skip.wait(), 0, "--skip-ahead goes on");
    let said = skip.events();
    let gap = said
        .iter()
        .find(|v| event_is(v, "gap"))
        .unwrap_or_else(|| panic!("no gap event: {said:?}"));
    assert_eq!(gap["reason"], "too_slow");
    let skipped = gap["bytes"].as_u64().unwrap();
    assert!(skipped > 0, "{gap}");
    let got = skip_bytes.join().unwrap();
    assert_eq!(got.len(), 2 << 20, "--until 2M");
    // Contiguous on each side of the one gap.
    let nums = whole_lines(&got);
    let jumps: Vec<_> = nums.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(jumps.len() <= 1, "one gap at most in the lines: {jumps:?}");
}

#[test]
fn an_altered_chunk_is_reported_with_its_offset_and_never_written() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-tamper") else {
        return;
    };
    let feed = counter(50);
    let (_p, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &[&feed],
        &["--live-buffer", "1M", "--fault-flip-live-byte", "20000"],
    );
    let (mut c, out) = consumer_with(
        &dir,
        "buyer",
        &chain,
        1,
        &relay_addr,
        &[format!("{pid}/ticks")],
        &["--from", "0", "--until", "60000"],
    );
    assert_eq!(c.wait_exit(T), 0);
    let bad = c
        .matching(|v| event_is(v, "error") && v["reason"] == "bad_chunk")
        .pop()
        .expect("the altered chunk is reported");
    let detail = bad["detail"].as_str().unwrap();
    let at: u64 = detail
        .split("chunk at offset ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {detail:?}"));
    assert!(at <= 20_000, "the chunk holding byte 20000 starts at {at}");
    // Exactly the counter from 0: the altered byte was never written, the
    // chunk came again intact.
    let expected: String = (0u64..)
        .map(|n| format!("{n}\n"))
        .take_while({
            let mut len = 0;
            move |s| {
                let ok = len < 60_000;
                len += s.len();
                ok
            }
        })
        .collect();
    let got = read(&out.join(&pid).join("ticks"));
    assert_eq!(got.len(), 60_000);
    assert!(
        got == expected.as_bytes()[..60_000],
        "the output is the counter from 0"
    );
    assert!(stream_done(&mut c)["resumes"].as_u64().unwrap() >= 1);
}

#[test]
fn out_dash_writes_exactly_the_streams_bytes_to_stdout() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-stdout") else {
        return;
    };
    let (_p, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["data=random:300K:7"],
        &[],
    );
    let (mut c, _) = Piped::start(
        &dir,
        "buyer",
        &chain,
        1,
        &relay_addr,
        &format!("{pid}/data"),
        &[],
    );
    let bytes = c.drain();
    assert_eq!(c.wait(), 0);
    let got = bytes.join().unwrap();
    let expected = futures::executor::block_on(ledgermesh_e2e::truth(
        &ledgermesh_node::source::Source::Random {
            len: 300 << 10,
            seed: 7,
        },
    ));
    assert_eq!(got.len(), 300 << 10);
    assert_eq!(
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&got)),
        expected,
        "stdout carries the stream and nothing else"
    );
    let done = c
        .events()
        .into_iter()
        .find(|v| event_is(v, "stream_done"))
        .expect("stream_done in --events");
    assert_eq!(done["verified"], true);
    assert_eq!(done["path"], "-");
}

#[test]
fn listen_local_serves_the_stream_to_plain_tcp_clients() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-local") else {
        return;
    };
    let feed = counter(50);
    let (_p, pid) = provider(&dir, "provider", &chain, 0, &relay_addr, &[&feed], &[]);
    let (key, _) = keygen(&dir.0, "buyer");
    let want = format!("{pid}/ticks");
    let mut c = Proc::start(
        "buyer",
        &dir.0,
        &[
            "consume",
            "--json",
            "--key",
            &key,
            "--ledger",
            &chain.spec,
            "--ledger-key",
            &chain.keys[1],
            "--relay",
            &relay_addr,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen-local",
            "127.0.0.1:0",
            "--until",
            "60K",
            "--want",
            &want,
        ],
    );
    let ev = c.wait_for("local_listening", T, |v| event_is(v, "local_listening"));
    let addr: std::net::SocketAddr = ev["addr"].as_str().unwrap().parse().unwrap();
    // Two plain TCP clients, as `nc 127.0.0.1 PORT` would be.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = std::io::Read::read_to_end(&mut s, &mut all);
                all
            })
        })
        .collect();
    assert_eq!(c.wait_exit(T), 0);
    for (i, h) in clients.into_iter().enumerate() {
        let got = h.join().unwrap();
        assert!(got.len() > 10_000, "client {i}: {} bytes", got.len());
        assert_contiguous(&format!("client {i}"), &whole_lines(&got));
    }
    assert_eq!(stream_done(&mut c)["bytes"], 60 * 1024);
}

#[test]
fn nc_and_echo_work_against_each_other_through_a_relay() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-echo") else {
        return;
    };
    // `echo` is a provider: reached only through the relay, no hole punch.
    // It also keeps an inbox: what a buyer sends is appended to a file.
    let inbox_path = dir.0.join("inbox.txt");
    let inbox = format!("inbox=inbox:{}", inbox_path.display());
    let (args, pid) = provider_argv(
        &dir,
        "echo",
        &chain,
        0,
        &relay_addr,
        &[&inbox],
        &["--relay-only", "--no-hole-punch", "--inbox-max-bytes", "12"],
    );
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv[0] = "echo";
    let mut e = Proc::start("echo", &dir.0, &argv);
    e.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));

    let input: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let nc = |name: &str, key_index: usize, stream: &str, extra: &[&str]| {
        let (key, _) = keygen(&dir.0, name);
        let events = dir.0.join(format!("{name}-events.jsonl"));
        let mut cmd = std::process::Command::new(bin_path());
        cmd.current_dir(&dir.0)
            .args([
                "nc",
                &format!("{pid}/{stream}"),
                "--key",
                &key,
                "--ledger",
                &chain.spec,
                "--ledger-key",
                &chain.keys[key_index],
                "--relay",
                &relay_addr,
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-hole-punch",
                "--events",
                events.to_str().unwrap(),
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "true")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.0.join(format!("{name}.log"))).unwrap());
        (cmd.spawn().expect("nc"), events)
    };
    let (mut child, events) = nc("sender", 1, "echo", &["--send"]);
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, &data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "nc --send failed");
    assert!(
        out.stdout == input,
        "the echo came back byte for byte ({} of {} bytes)",
        out.stdout.len(),
        input.len()
    );
    let said: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let to_echo: Vec<&Value> = said
        .iter()
        .filter(|v| event_is(v, "connected") && v["peer_id"] == pid.as_str())
        .collect();
    assert!(
        !to_echo.is_empty() && to_echo.iter().all(|v| v["path"] == "relayed"),
        "{to_echo:?}"
    );

    // The inbox: what is sent lands in the provider's file, nothing comes back.
    let (mut child, _) = nc("poster", 3, "inbox", &["--send"]);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello inbox\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nc --send to the inbox failed");
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&inbox_path).unwrap(), b"hello inbox\n");
    // Full at --inbox-max-bytes (12): the next sender is refused, nothing written.
    let (mut child, _) = nc("poster2", 3, "inbox", &["--send"]);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello again\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a full inbox takes no more");
    assert_eq!(std::fs::read(&inbox_path).unwrap(), b"hello inbox\n");

    // Reading an echo without sending is refused, and says why.
    let (child, events) = nc("reader", 2, "echo", &[]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let said = std::fs::read_to_string(&events).unwrap();
    assert!(said.contains("\"reason\":\"direction\""), "{said}");
}

#[test]
fn a_buyer_stays_subscribed_across_a_provider_restart_and_reports_the_gap() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-restart") else {
        return;
    };
    let feed = counter(50);
    // One identity and data directory for both runs: the grant survives.
    let (args, pid) = provider_argv(&dir, "provider", &chain, 0, &relay_addr, &[&feed], &[]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::start("provider", &dir.0, &argv);
    p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
    let (mut c, out) = consumer_with(
        &dir,
        "buyer",
        &chain,
        1,
        &relay_addr,
        &[format!("{pid}/ticks")],
        &["--until", "160K"],
    );
    // Once some of it has arrived (no event per chunk: the file says),
    // the provider stops and comes back.
    let file = out.join(&pid).join("ticks");
    let deadline = std::time::Instant::now() + T;
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 20_000 {
        assert!(std::time::Instant::now() < deadline, "no data");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    p.stop();
    let mut again = Proc::start("provider-restarted", &dir.0, &argv);
    again.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
    assert_eq!(c.wait_exit(T), 0, "the buyer stayed and finished");
    let gap = c
        .matching(|v| event_is(v, "gap"))
        .pop()
        .expect("the restart is reported as a gap");
    assert_eq!(gap["reason"], "restarted", "{gap}");
    let done = stream_done(&mut c);
    assert_eq!(done["bytes"], 160 * 1024);
    assert_eq!(done["live"]["gaps"], 1);
    // Two contiguous runs of the counter: before and after the restart.
    let nums = whole_lines(&read(&file));
    let breaks: Vec<usize> = (1..nums.len())
        .filter(|&i| nums[i] != nums[i - 1] + 1)
        .collect();
    assert!(
        breaks.len() <= 2,
        "one gap (a line may be cut at it): {breaks:?}"
    );
}

/// `consume --out - | head -1`: once the reader has its line and closes the
/// pipe, the consumer ends at once with exit 0, and never resubscribes to
/// write into a pipe nobody reads.
#[test]
fn a_live_stream_piped_into_head_ends_when_head_leaves() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("live-head") else {
        return;
    };
    let feed = fast_counter(&dir.0);
    let (_p, pid) = provider(&dir, "provider", &chain, 0, &relay_addr, &[&feed], &[]);
    let (mut head, _) = Piped::start(
        &dir,
        "head",
        &chain,
        1,
        &relay_addr,
        &format!("{pid}/ticks"),
        &[],
    );
    // `head -1`: one line, then the pipe's reading end is closed.
    let out = head.child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    assert_eq!(line, "0\n", "the first line of the feed");
    let closed = std::time::Instant::now();
    assert_eq!(head.wait(), 0, "a closed pipe is the end the user chose");
    let events = head.events();
    let broke: Vec<_> = events
        .iter()
        .filter(|v| event_is(v, "error") || event_is(v, "stream_resumed"))
        .collect();
    assert!(broke.is_empty(), "no error, no resubscribing: {broke:?}");
    println!(
        "LIVE | head -1: the consumer exited {:.2} s after the pipe closed",
        closed.elapsed().as_secs_f64()
    );
}
