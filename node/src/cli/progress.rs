//! `consume`'s progress bars: one per finite stream, on a terminal only
//! (not when stderr is redirected, not with `--json`). They are drawn
//! from the node's stream counters, so they cost the transfer nothing.

use crate::ops::{Dir, Traffic};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Whether bars should be drawn: stderr is a terminal and no JSON is asked for.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// Draws bars for the streams `traffic` receives until the task is dropped.
pub fn spawn(traffic: Traffic) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template(
            "{prefix:32} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut bars: HashMap<(String, String), ProgressBar> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let active = traffic.active();
            let mut seen = Vec::new();
            for s in active.iter().filter(|s| s.direction == Dir::In) {
                let Some(len) = s.length else { continue };
                let key = (s.peer_id.clone(), s.stream.clone());
                let bar = bars.entry(key.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(len));
                    b.set_style(style.clone());
                    let peer = &s.peer_id[s.peer_id.len().saturating_sub(6)..];
                    b.set_prefix(format!("…{peer}/{}", s.stream));
                    b
                });
                bar.set_position(s.offset.min(len));
                seen.push(key);
            }
            bars.retain(|k, b| {
                let running = seen.contains(k);
                if !running {
                    b.finish();
                }
                running
            });
        }
    })
}
