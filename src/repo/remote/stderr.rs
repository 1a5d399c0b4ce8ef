//! The server's stderr: borg 1.1+ servers write one JSON object per line
//! (`{"type": "log_message", "levelname": "WARNING", "message": …}`), older ones
//! `$LOG <level> [<logger>] Remote: <msg>`, and ssh itself writes plain text. Log lines are
//! re-emitted as `Remote: <message>` like borg does; the last lines are kept so that a
//! broken connection can be explained.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Python logging levels, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Debug,
    Info,
    #[default]
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    /// A Python `levelname`; unknown names count as critical, as borg treats them.
    pub fn from_name(name: &str) -> Self {
        match name {
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARNING" | "WARN" => LogLevel::Warning,
            "ERROR" => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }

    /// The `borg serve` option that makes the server log at this level (none for the
    /// default, warning).
    pub fn serve_option(self) -> Option<&'static str> {
        match self {
            LogLevel::Debug => Some("--debug"),
            LogLevel::Info => Some("--info"),
            LogLevel::Warning => None,
            LogLevel::Error => Some("--error"),
            LogLevel::Critical => Some("--critical"),
        }
    }
}

/// What one stderr line means.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteLine {
    /// A log record of the server.
    Log { level: LogLevel, message: String },
    /// Progress output or an unknown JSON record: not shown.
    Ignored,
    /// Anything else (ssh errors, shell errors, pre-1.1 servers): always shown.
    Plain(String),
}

/// Classifies one line (without its line end).
pub fn parse_line(line: &str) -> RemoteLine {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.starts_with('{') {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(line) {
            return match m.get("type").and_then(|t| t.as_str()) {
                Some("log_message") => RemoteLine::Log {
                    level: LogLevel::from_name(
                        m.get("levelname").and_then(|l| l.as_str()).unwrap_or(""),
                    ),
                    message: m
                        .get("message")
                        .and_then(|x| x.as_str())
                        .unwrap_or("")
                        .to_string(),
                },
                _ => RemoteLine::Ignored,
            };
        }
    }
    if let Some(rest) = line.strip_prefix("$LOG ") {
        let (level, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let msg = match msg.strip_prefix("Remote:") {
            Some(m) => m,
            // `$LOG <level> <logger> Remote: <msg>`
            None => msg.split_once(' ').map(|(_, m)| m).unwrap_or(msg),
        };
        let msg = msg
            .trim_start()
            .strip_prefix("Remote:")
            .unwrap_or(msg)
            .trim();
        return RemoteLine::Log {
            level: LogLevel::from_name(level),
            message: msg.to_string(),
        };
    }
    RemoteLine::Plain(line.to_string())
}

const TAIL_LINES: usize = 20;

#[derive(Default)]
struct State {
    tail: VecDeque<String>,
    done: bool,
}

/// The stderr reader's shared state: recent lines and whether the stream ended.
#[derive(Default)]
pub struct StderrLog {
    state: Mutex<State>,
    ended: Condvar,
}

impl StderrLog {
    fn push(&self, line: String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.tail.len() == TAIL_LINES {
            st.tail.pop_front();
        }
        st.tail.push_back(line);
    }

    /// Marks the stream as ended.
    pub fn finish(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.done = true;
        self.ended.notify_all();
    }

    /// The last lines seen, waiting up to `wait` for the stream to end first (a dying
    /// ssh writes its reason just before it exits).
    pub fn tail(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !st.done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = match self.ended.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        st.tail.iter().cloned().collect()
    }
}

/// Reads the server's stderr until it ends, echoing log lines at or above `show` (and
/// every plain line) to our stderr as `Remote: …`.
pub fn pump(stream: impl Read, show: LogLevel, log: Arc<StderrLog>) {
    let mut rd = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match rd.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let shown = match parse_line(&line) {
            RemoteLine::Log { level, message } => {
                if level >= LogLevel::Warning {
                    log.push(message.clone());
                }
                (level >= show).then_some(message)
            }
            RemoteLine::Ignored => None,
            RemoteLine::Plain(text) => {
                if text.trim().is_empty() {
                    None
                } else {
                    log.push(text.clone());
                    Some(text)
                }
            }
        };
        if let Some(msg) = shown {
            let _ = writeln!(std::io::stderr().lock(), "Remote: {msg}");
        }
    }
    log.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let l = r#"{"type": "log_message", "time": 1.5, "message": "Permission denied", "levelname": "ERROR", "name": "borg.archiver"}"#;
        assert_eq!(
            parse_line(l),
            RemoteLine::Log {
                level: LogLevel::Error,
                message: "Permission denied".into()
            }
        );
        assert_eq!(
            parse_line(r#"{"type": "progress_percent", "finished": false}"#),
            RemoteLine::Ignored
        );
        let l = r#"{"type": "log_message", "message": "x", "levelname": "WEIRD"}"#;
        assert!(matches!(
            parse_line(l),
            RemoteLine::Log {
                level: LogLevel::Critical,
                ..
            }
        ));
    }

    #[test]
    fn legacy_and_plain_lines() {
        assert_eq!(
            parse_line("$LOG WARNING Remote: careful\n"),
            RemoteLine::Log {
                level: LogLevel::Warning,
                message: "careful".into()
            }
        );
        assert_eq!(
            parse_line("$LOG INFO borg.repository Remote: hello"),
            RemoteLine::Log {
                level: LogLevel::Info,
                message: "hello".into()
            }
        );
        assert_eq!(
            parse_line("bash: borg: command not found\n"),
            RemoteLine::Plain("bash: borg: command not found".into())
        );
        assert_eq!(
            parse_line("{not json"),
            RemoteLine::Plain("{not json".into())
        );
    }

    #[test]
    fn pump_keeps_a_tail_and_ends() {
        let log = Arc::new(StderrLog::default());
        let input =
            b"{\"type\": \"log_message\", \"message\": \"dbg\", \"levelname\": \"DEBUG\"}\n\
{\"type\": \"log_message\", \"message\": \"warn\", \"levelname\": \"WARNING\"}\nssh: broken\n";
        pump(&input[..], LogLevel::Critical, log.clone());
        assert_eq!(
            log.tail(Duration::from_secs(1)),
            vec!["warn".to_string(), "ssh: broken".to_string()]
        );
        assert!(LogLevel::Debug < LogLevel::Warning);
        assert_eq!(LogLevel::Info.serve_option(), Some("--info"));
    }
}
