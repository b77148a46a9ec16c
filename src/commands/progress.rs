//! Progress of pulls and builds: indicatif bars on a terminal (one per layer download, one per
//! layer conversion: bytes, rate, ETA); one line per finished step when stderr is not a
//! terminal (batch jobs, logs); nothing with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// A set of tasks (downloads or layer conversions), each with a size in bytes.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    tasks: Mutex<HashMap<String, Task>>,
}

struct Task {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    finished: bool,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        });
        Progress {
            mode,
            multi,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// One line of status (a step with no size), shown in every mode but quiet.
    pub fn say(&self, line: &str) {
        // Lines quote registries' messages (retry reasons): escaped like errors.
        let line = &super::term::one_line(line);
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                let _ = self.multi.println(line);
            }
            Mode::Lines => eprintln!("{line}"),
        }
    }

    /// Starts task `id`, labelled `label`, of `total` bytes.
    pub fn start(&self, id: &str, label: &str, total: u64) {
        let bar = (self.mode == Mode::Bars).then(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>22} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.insert(
            id.to_string(),
            Task {
                bar,
                total,
                started: Instant::now(),
                finished: false,
            },
        );
    }

    /// `done` bytes of task `id` are through.
    pub fn update(&self, id: &str, done: u64) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Task { bar: Some(bar), .. }) = tasks.get(id) {
            bar.set_position(done);
        }
    }

    /// Task `id` is complete: its bar fills, or a line says `what` with size and time.
    pub fn finish(&self, id: &str, what: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(task) = tasks.get_mut(id) else {
            return;
        };
        if task.finished {
            return;
        }
        task.finished = true;
        match &task.bar {
            Some(bar) => bar.finish(),
            None if self.mode == Mode::Lines => eprintln!(
                "{what} ({}, {:.1} s)",
                HumanBytes(task.total),
                task.started.elapsed().as_secs_f64()
            ),
            None => {}
        }
    }

    /// Removes the bars (before printing a final result).
    pub fn clear(&self) {
        let _ = self.multi.clear();
    }
}

/// Progress of the layer conversion: task `convert-<index>` per layer.
pub struct ConvertProgress {
    pub progress: std::sync::Arc<Progress>,
    pub sizes: Vec<u64>,
}

impl ConvertProgress {
    pub fn start(progress: std::sync::Arc<Progress>, sizes: Vec<u64>) -> ConvertProgress {
        for (i, size) in sizes.iter().enumerate() {
            progress.start(
                &format!("convert-{i}"),
                &format!("converting layer {}", i + 1),
                *size,
            );
        }
        ConvertProgress { progress, sizes }
    }

    pub fn finish_all(&self) {
        for i in 0..self.sizes.len() {
            self.progress.finish(
                &format!("convert-{i}"),
                &format!("converted layer {}", i + 1),
            );
        }
    }
}

impl crate::convert::Observer for ConvertProgress {
    fn layer_progress(&self, index: usize, done: u64) {
        // Finished only by `finish_all`, once the whole conversion (digest checks included)
        // has succeeded.
        self.progress.update(&format!("convert-{index}"), done);
    }
}
