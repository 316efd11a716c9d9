//! `consume`'s progress bars: one per finite stream, on a terminal only
//! (not when stderr is redirected, not with `--json`). They are drawn
//! from the node's stream counters, so they cost the transfer nothing.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ledgermesh_node::ops::{Dir, Traffic};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Whether bars should be drawn: stderr is a terminal and no JSON is asked for.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// The bars being drawn; [`Bars::stop`] clears them (before the final
/// lines are printed), dropping them stops drawing.
pub struct Bars {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Bars {
    /// Clears the bars from the terminal and stops drawing.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How far back the shown rate looks: long enough to be steady, short
/// enough to follow a change (a resume, a slower path).
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// A stream's rate over the last [`RATE_WINDOW`], from its offsets.
#[derive(Default)]
struct Rate(std::collections::VecDeque<(std::time::Instant, u64)>);

impl Rate {
    fn push(&mut self, now: std::time::Instant, offset: u64) -> Option<f64> {
        // A jump back (a restart from an earlier offset) starts over.
        if self.0.back().is_some_and(|&(_, o)| offset < o) {
            self.0.clear();
        }
        self.0.push_back((now, offset));
        while self.0.len() > 2 && now.duration_since(self.0[1].0) >= RATE_WINDOW {
            self.0.pop_front();
        }
        let &(t0, o0) = self.0.front()?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 0.5).then(|| (offset - o0) as f64 / secs)
    }
}

fn per_second(rate: Option<f64>) -> String {
    match rate {
        Some(r) => format!("{}/s", indicatif::BinaryBytes(r as u64)),
        None => "-".into(),
    }
}

/// Draws bars for the streams `traffic` receives until stopped.
pub fn spawn(traffic: Traffic) -> Bars {
    let (tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template(
            "{prefix:32} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg:>12} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut bars: HashMap<(String, String), (ProgressBar, Rate)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            let now = std::time::Instant::now();
            let active = traffic.active();
            let mut seen = Vec::new();
            for s in active.iter().filter(|s| s.direction == Dir::In) {
                let Some(len) = s.length else { continue };
                let key = (s.peer_id.clone(), s.stream.clone());
                let (bar, rate) = bars.entry(key.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(len));
                    b.set_style(style.clone());
                    let peer = &s.peer_id[s.peer_id.len().saturating_sub(6)..];
                    b.set_prefix(format!("…{peer}/{}", s.stream));
                    (b, Rate::default())
                });
                let at = s.offset.min(len);
                bar.set_message(per_second(rate.push(now, at)));
                bar.set_position(at);
                seen.push(key);
            }
            bars.retain(|k, (b, _)| {
                let running = seen.contains(k);
                if !running {
                    b.finish();
                }
                running
            });
        }
        for (b, _) in bars.values() {
            b.finish_and_clear();
        }
        let _ = multi.clear();
    });
    Bars {
        stop: Some(tx),
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_a_window_and_a_jump_back_starts_it_over() {
        let t = std::time::Instant::now();
        let mut r = Rate::default();
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(r.push(at(0), 0), None, "nothing to go by yet");
        // 1 MiB/s for 5 s, then a resume from far ahead does not read as
        // a burst of GiB/s once the window has moved past it.
        for s in 1..=5u64 {
            let got = r.push(at(s * 1000), s << 20).unwrap();
            assert!((got - (1 << 20) as f64).abs() < 1.0, "{got}");
        }
        let got = r.push(at(5100), 1 << 20).unwrap_or(0.0);
        assert_eq!(got, 0.0, "a jump back starts over");
        assert_eq!(per_second(Some(1536.0)), "1.50 KiB/s");
    }
}
