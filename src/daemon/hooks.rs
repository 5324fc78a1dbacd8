//! Notification hooks: a program run with its argv and the JSON document on stdin, or a plain
//! HTTP/1.1 POST of the document to a loopback URL. Each is bounded in time; a failing hook is
//! logged and never stops the daemon.

use crate::adapters::probe::HttpUrl;
use crate::config::Hook;
use serde::Serialize;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one hook may take.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a hook is told, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookEvent {
    /// `healed`, `heal_failed` or `escalated`.
    pub event: &'static str,
    /// The upstream address nginx dials (`*` for the global breaker).
    pub target: String,
    pub site: Option<String>,
    /// The playbook id.
    pub cause: Option<String>,
    pub unit: Option<String>,
    /// For escalations: `crash_loop`, `unit_restarts`, `rate_limited`, `circuit_open`,
    /// `own_environment`, `rollback_incomplete`.
    pub reason: Option<&'static str>,
    pub detail: String,
    /// The audit journal's transaction ids of the heal.
    pub transactions: Vec<String>,
    /// Seconds from the incident opening to this event.
    pub seconds: Option<f64>,
    /// Unix time of the event.
    pub time: f64,
    pub host: String,
}

/// A hook that did not run to a good end.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` exited with {status}")]
    Exit { program: String, status: String },
    #[error("the hook took longer than {} s and was stopped", HOOK_TIMEOUT.as_secs())]
    Timeout,
    #[error("webhook `{url}`: {reason}")]
    Webhook { url: String, reason: String },
}

/// Runs every hook for `event`, one after the other; failures are logged.
pub async fn notify(hooks: &[Hook], event: &HookEvent) {
    if hooks.is_empty() {
        return;
    }
    let document = match serde_json::to_vec(event) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the hook document");
            return;
        }
    };
    for hook in hooks {
        let ran = tokio::time::timeout(HOOK_TIMEOUT, run(hook, &document)).await;
        let result = ran.unwrap_or(Err(HookError::Timeout));
        match result {
            Ok(()) => {
                tracing::debug!(hook = %describe(hook), event = event.event, upstream = %event.target, "hook ran")
            }
            Err(e) => {
                tracing::warn!(hook = %describe(hook), event = event.event, upstream = %event.target, error = %e, "hook failed")
            }
        }
    }
}

fn describe(hook: &Hook) -> String {
    match hook {
        Hook::Exec(argv) => argv.join(" "),
        Hook::Webhook(url) => url.clone(),
    }
}

async fn run(hook: &Hook, document: &[u8]) -> Result<(), HookError> {
    match hook {
        Hook::Exec(argv) => exec(argv, document).await,
        Hook::Webhook(url) => post(url, document).await,
    }
}

async fn exec(argv: &[String], document: &[u8]) -> Result<(), HookError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            program: program.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(document).await;
        drop(stdin);
    }
    let status = child.wait().await.map_err(|source| HookError::Spawn {
        program: program.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Exit {
            program: program.clone(),
            status: status.to_string(),
        })
    }
}

async fn post(url: &str, document: &[u8]) -> Result<(), HookError> {
    let fail = |reason: String| HookError::Webhook {
        url: url.to_string(),
        reason,
    };
    let parsed = HttpUrl::parse(url).map_err(|e| fail(e.to_string()))?;
    let mut stream = tokio::net::TcpStream::connect((parsed.host.as_str(), parsed.port))
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nginx-medic\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        parsed.path,
        parsed.host_header(),
        document.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    stream
        .write_all(document)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| fail("no HTTP status line in the answer".into()))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(fail(format!("answered {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn event() -> HookEvent {
        HookEvent {
            event: "escalated",
            target: "127.0.0.1:8000".into(),
            site: Some("api.lab".into()),
            cause: Some("backend-down".into()),
            unit: Some("api.service".into()),
            reason: Some("crash_loop"),
            detail: "2 failed heals".into(),
            transactions: vec![],
            seconds: None,
            time: 1.0,
            host: "h".into(),
        }
    }

    #[tokio::test]
    async fn exec_hook_gets_the_document_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let hook = Hook::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("cat > {}", out.display()),
        ]);
        notify(std::slice::from_ref(&hook), &event()).await;
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(doc["event"], "escalated");
        assert_eq!(doc["reason"], "crash_loop");
        assert_eq!(doc["unit"], "api.service");
        let failing = Hook::Exec(vec!["/bin/false".into()]);
        assert!(matches!(
            run(&failing, b"{}").await,
            Err(HookError::Exit { .. })
        ));
    }

    #[tokio::test]
    async fn webhook_posts_the_document() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((_, body)) = text.split_once("\r\n\r\n") {
                    if body.ends_with('}') {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let url = format!("http://127.0.0.1:{port}/medic");
        run(&Hook::Webhook(url), br#"{"event":"healed"}"#)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /medic HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Length: 18\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n{\"event\":\"healed\"}"));
    }
}
