//! The built-in sample context that playbook fact paths and templates are checked against.

use serde_json::{json, Value};

/// A context with every field the engine builds for one target filled in (unit and bind present,
/// one other port, even `endpoint.path`, which a TCP endpoint leaves null), so that strict
/// rendering and fact-path checks can see every path. It is not a consistent situation; it is
/// a map of the paths. `endpoint.listener` stays null: its shape is the engine's to define.
///
/// Keep it in step with the context the engine builds: a path missing here is reported as an
/// unknown fact by `playbooks check`.
pub fn sample_context() -> Value {
    json!({
        "site": {
            "name": "api.lab",
            "listen": ["127.0.0.1:18000"],
            "url": "http://127.0.0.1:18000/",
            "host": "api.lab:18000",
            "not_aimed": "`server_name _` gives no literal name to send as `Host`, and the server is not the default_server of 127.0.0.1:18000",
            "location": "/"
        },
        "pass": {
            "directive": "proxy_pass",
            "target": "127.0.0.1:18010",
            "kind": "tcp",
            "scheme": "http",
            "uri": "",
            "file": "/etc/nginx/sites-enabled/api.conf",
            "line": 4
        },
        "endpoint": {
            "address": "127.0.0.1:18010",
            "kind": "tcp",
            "host": "127.0.0.1",
            "port": 18010,
            "path": "/run/api/api.sock",
            "listening": false,
            "listener": null,
            // unix sockets (socket-missing, socket-permission)
            "exists": false,
            "socket": {"owner": "root", "group": "root", "uid": 0, "gid": 0, "mode": "0600"},
            "worker_can_connect": false,
            "pool": {
                "name": "www",
                "file": "/etc/php/8.2/fpm/pool.d/www.conf",
                "unit": "php8.2-fpm.service",
                "listen_owner": "root",
                "listen_group": "root",
                "listen_mode": "0600"
            },
            "host_name": "localhost"
        },
        "unit": {
            "name": "api.service",
            "active_state": "active",
            "sub_state": "running",
            "result": "success",
            "main_pid": 4242,
            "n_restarts": 0,
            "listeners": ["127.0.0.2:18010"],
            "hosts_on_endpoint_port": ["127.0.0.2"],
            "other_ports": [18011],
            // the ports no site dials, each requested directly (wrong-port, facts::direct)
            "candidates": [{"port": 18011, "address": "127.0.0.1:18011", "path": "/", "status": 200,
                            "viable": true, "why": "answers 200 at /",
                            "named_by": "the last good configuration, api.service"}],
            "viable_ports": [18011],
            "bind": {"file": "/etc/default/api", "key": "HOST", "value": "127.0.0.2", "from": "hint", "where": "HOST in /etc/default/api"},
            // how the main process last ran (crash-loop)
            "restart": "on-failure",
            "exec_main_status": 3,
            "last_run_ms": 640,
            "exec_main_code": "exited",
            "start_failed": true,
            "output": ["[ERROR] Reason: Worker failed to boot."],
            "output_from": "file:/var/log/api.log"
        },
        // backends systemd does not run (engine/backend_context.rs)
        "pm2": {
            "name": "api",
            "pm_id": 0,
            "status": "stopped",
            "pid": 0,
            "restarts": 2,
            "unstable_restarts": 0,
            "max_restarts": 16,
            "autorestart": true,
            "exit_code": 1,
            "crash_loop": false,
            "cwd": "/srv/api",
            "home": "/root/.pm2",
            "binary": "/usr/lib/node_modules/pm2/bin/pm2",
            "uid": 0,
            "gid": 0,
            "daemon_unit": "pm2-root.service",
            "listeners": ["127.0.0.2:3000"],
            "hosts_on_endpoint_port": ["127.0.0.2"],
            "bind": {"file": "/srv/api/ecosystem.config.js", "key": "HOST", "value": "127.0.0.2", "from": "ecosystem", "where": "HOST of app `api` in /srv/api/ecosystem.config.js"},
            "bind_problem": "/srv/api/ecosystem.config.js: its `HOST` is computed, not a literal string: edit it by hand",
            "output": ["Error: listen EADDRINUSE"],
            "output_from": "file:/root/.pm2/logs/api-error.log"
        },
        "unsupervised": {
            "pid": 4242,
            "listening": false,
            "command": "/srv/venv/bin/python3 /srv/venv/bin/uvicorn main:app --port 8000",
            "cwd": "/srv/app",
            "user": "deploy",
            "env_names": ["DATABASE_URL"],
            "seen_at": 1764590000,
            "unit_name": "uvicorn-8000.service",
            "unit_file": "[Service]\nExecStart=/srv/venv/bin/uvicorn main:app\n"
        },
        // the worker identity (socket-permission)
        "nginx": {"user": "www-data", "group": "www-data"},
        "log": {
            "connection_refused": 2,
            "no_such_file": 0,
            "permission_denied": 0,
            "timed_out": 0,
            "prematurely_closed": 0,
            "reset_by_peer": 0,
            "too_big_header": 0,
            "invalid_header": 0,
            "no_live_upstreams": 0,
            "host_not_found": 0,
            "other": 0
        },
        // ----- nginx-side causes (engine/context.rs, nginx-side block) -----
        "location": {
            "path": "/",
            "file": "/etc/nginx/sites-enabled/api.conf",
            "line": 3,
            "prefix": "proxy",
            "buffer_size": "4k",
            "buffer_size_set": false,
            "buffers": "8 4k",
            "busy_buffers_size": "8k",
            "read_timeout": "60s",
            "read_timeout_set": false,
            "raise": {"buffer_size": "16k", "buffers": "4 16k", "cap": "64k", "from": "measurement"},
            // the backend's header block, requested directly at the site's probe path
            "rolled_back": 1,
            "measured": {"address": "127.0.0.1:18010", "path": "/", "status": 200,
                         "header_bytes": 9000, "above_cap": false}
        },
        "route": {
            "endpoint_index": 0,
            "addresses": ["127.0.0.1:18010", "[::1]:18010"],
            "listening_addresses": ["[::1]:18010"],
            "all_listening": false,
            "upstream": "web_backend",
            "no_live_upstreams": 0,
            "pinnable": ["[::1]:18010"]
        },
        "recent": {
            "window": "15m",
            "counts": {
                "connection_refused": 0,
                "no_such_file": 0,
                "permission_denied": 0,
                "timed_out": 1,
                "prematurely_closed": 0,
                "reset_by_peer": 0,
                "too_big_header": 1,
                "invalid_header": 0,
                "no_live_upstreams": 0,
                "host_not_found": 0
            },
            "last": {
                "connection_refused": null,
                "no_such_file": null,
                "permission_denied": null,
                "timed_out": {
                    "time": "2026/11/26 09:07:37",
                    "level": "error",
                    "message": "upstream timed out (110: Connection timed out) while reading response header from upstream",
                    "phase": "reading response header from upstream",
                    "request": "GET /slow?seconds=8 HTTP/1.1",
                    "client": "127.0.0.1",
                    "upstream": "http://127.0.0.1:18010/slow?seconds=8",
                    "url": "http://127.0.0.1:18000/slow?seconds=8"
                },
                "prematurely_closed": null,
                "reset_by_peer": null,
                "too_big_header": {
                    "time": "2026/11/26 09:07:37",
                    "level": "error",
                    "message": "upstream sent too big header while reading response header from upstream",
                    "phase": "reading response header from upstream",
                    "request": "GET / HTTP/1.1",
                    "client": "127.0.0.1",
                    "upstream": "http://127.0.0.1:18010/",
                    "url": "http://127.0.0.1:18000/"
                },
                "invalid_header": null,
                "no_live_upstreams": null,
                "host_not_found": null
            }
        }
        // ----- end of the nginx-side block -----
    })
}
