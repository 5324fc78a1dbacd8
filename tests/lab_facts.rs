//! `nginx-medic facts` against the lab: real nginx, real systemd over D-Bus, real backends.

use crate::support::lab::Lab;
use serde_json::Value;

fn facts(lab: &Lab) -> Value {
    let out = lab.medic(&["facts", "--json"]);
    assert!(
        out.status.success(),
        "facts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("facts --json prints JSON")
}

fn route<'a>(facts: &'a Value, site: &str) -> &'a Value {
    facts["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["site"] == site))
        .unwrap_or_else(|| panic!("no route for {site}: {facts:#}"))
}

fn unit<'a>(facts: &'a Value, name: &str) -> &'a Value {
    facts["units"]["data"]
        .as_array()
        .and_then(|units| units.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no unit {name}: {:#}", facts["units"]))
}

#[test]
fn lab_facts_map_sites_to_units_and_see_a_stopped_backend() {
    let lab = Lab::start();
    let f = facts(&lab);
    assert_eq!(f["nginx"]["status"], "ok", "{:#}", f["nginx"]);
    assert_eq!(f["units"]["status"], "ok", "{:#}", f["units"]);

    let api = route(&f, "api.lab");
    let api_addr = format!("127.0.0.1:{}", lab.port("api"));
    assert_eq!(api["target"], api_addr);
    let api_conf = lab.dir.join("nginx/sites-enabled/api.conf");
    assert_eq!(api["at"], format!("{}:7", api_conf.display()));
    let endpoint = &api["endpoints"][0];
    assert_eq!(endpoint["listening"], true);
    assert_eq!(endpoint["unit"], "api.service");
    assert_eq!(endpoint["unit_from"], "socket_owner");
    let api_pid = lab.main_pid("api.service").expect("api runs");
    assert_eq!(endpoint["pid"], api_pid);

    let web = route(&f, "web.lab");
    assert_eq!(web["target"], "upstream web_backend");
    assert_eq!(
        web["endpoints"][0]["address"],
        format!("127.0.0.1:{}", lab.port("web"))
    );
    assert_eq!(web["endpoints"][0]["unit"], "web.service");
    assert_eq!(
        web["endpoints"][0]["pid"],
        lab.main_pid("web.service").expect("web runs")
    );
    assert_eq!(unit(&f, "nginx.service")["active_state"], "active");

    let stop = lab.systemctl(&["stop", "web.service"]);
    assert!(stop.status.success());
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 502);

    let f = facts(&lab);
    let web_addr = format!("127.0.0.1:{}", lab.port("web"));
    let endpoint = &route(&f, "web.lab")["endpoints"][0];
    assert_eq!(endpoint["listening"], false, "{endpoint:#}");
    assert_eq!(endpoint["pid"], Value::Null);
    assert_eq!(
        endpoint["unit"], "web.service",
        "found from its EnvironmentFile"
    );
    assert_eq!(endpoint["unit_from"], "unit_command_line");
    assert_eq!(unit(&f, "web.service")["active_state"], "inactive");
    let listening_on_port = f["sockets"]["data"]["tcp"]
        .as_array()
        .expect("tcp sockets")
        .iter()
        .any(|s| s["port"] == lab.port("web"));
    assert!(!listening_on_port, "nothing may listen on {web_addr}");
    let refused = f["error_log"]["data"]["entries"]
        .as_array()
        .expect("error log entries")
        .iter()
        .any(|e| e["class"] == "connection_refused" && e["upstream_addr"] == web_addr);
    assert!(
        refused,
        "no connection_refused line for {web_addr}: {:#}",
        f["error_log"]
    );

    let human = lab.medic(&["facts"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("(nothing listens)") && text.contains("web.service"),
        "{text}"
    );
}
