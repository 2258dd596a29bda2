//! A child process's output, read by a thread into a buffer the test can inspect and wait on.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Text read so far from one stream, shared with its reader thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<(Mutex<CapturedState>, Condvar)>);

#[derive(Default)]
struct CapturedState {
    text: String,
    closed: bool,
}

impl Captured {
    /// Starts a thread reading `stream` line by line until it closes.
    pub fn read_from(stream: impl Read + Send + 'static) -> Self {
        let captured = Captured::default();
        let shared = captured.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let (lock, cvar) = &*shared.0;
                        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                        state.text.push_str(&String::from_utf8_lossy(&line));
                        cvar.notify_all();
                    }
                }
            }
            let (lock, cvar) = &*shared.0;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cvar.notify_all();
        });
        captured
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.0
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .clone()
    }

    /// The last `n` lines read so far.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the stream closed (the writer exited and everything was read); false when
    /// `timeout` passed first.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = cvar
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits until a line equal to `line` was read; false when the stream closed or
    /// `timeout` passed first.
    pub fn wait_for_line(&self, line: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.text.lines().any(|l| l.trim_end() == line) {
                return true;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return false;
            }
            state = cvar
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
