//! The files in `deploy/` agree with what the binary accepts and with each other: compose, Prometheus config and
//! alert rules (checked by `promtool`), Grafana dashboards (every metric they query exists), and the Kubernetes
//! manifests (the node config in the ConfigMap parses and validates; ports and mount paths line up).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use baton_node::config::NodeConfig;
use serde_yaml::Value;

fn deploy() -> PathBuf {
    // At run time: a test binary reused from another checkout (shared target directory) must read this one.
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test")).join("../deploy")
}

fn yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_yaml::with::singleton_map_recursive::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("promtool is missing ({e}): run ./scripts/setup.sh"));
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric families the node exports, with the sample suffixes a query may use.
fn exported_names() -> BTreeSet<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    let _m = baton_node::metrics::Metrics::register(&mut registry);
    let text = baton_node::metrics::render(&registry);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("type line");
            names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        }
    }
    names
}

#[test]
fn compose_prometheus_and_grafana_agree_with_the_binary() {
    // Compose: four nodes, each running the shared config with its own key; init writes them with `baton testnet`.
    let compose = &yaml(&deploy().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    let init = strs(&services["init"]["command"]).join(" ");
    assert!(
        init.contains("baton testnet --validators 4 --out /testnet --host-template 'node{i}'"),
        "{init}"
    );
    for i in 0..4 {
        let cmd = strs(&services[format!("node{i}").as_str()]["command"]);
        assert_eq!(
            cmd,
            [
                "run",
                "--config",
                "/testnet/config.toml",
                "--key-file",
                &format!("/testnet/keys/node{i}.toml"),
                "--moniker",
                &format!("node{i}")
            ]
        );
    }
    // What `baton testnet` writes (same flags as the init service) is a config the node accepts, with the ports
    // that compose and Prometheus use.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("testnet");
    let status = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "testnet",
            "--validators",
            "4",
            "--host-template",
            "node{i}",
            "--data-dir",
            "/data",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("baton testnet");
    assert!(status.success());
    let cfg =
        NodeConfig::load(&out.join("config.toml")).expect("testnet config loads and validates");
    assert_eq!(cfg.grpc.listen_addr.port(), 50051);
    assert_eq!(cfg.metrics.listen_addr.port(), 26660);
    baton_node::config::Genesis::load(&out.join("genesis.toml"))
        .expect("testnet genesis validates");
    let prom = &yaml(&deploy().join("prometheus/prometheus.yml"))[0];
    let targets = strs(&prom["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(
        targets,
        (0..4).map(|i| format!("node{i}:26660")).collect::<Vec<_>>()
    );

    // promtool validates the Prometheus config and the alert rules.
    promtool(&[
        "check",
        "config",
        &deploy().join("prometheus/prometheus.yml").to_string_lossy(),
    ]);
    promtool(&[
        "check",
        "rules",
        &deploy().join("prometheus/alerts.yml").to_string_lossy(),
    ]);

    // Every Baton metric that a dashboard or an alert queries is one the node exports.
    let exported = exported_names();
    let mut queried = BTreeSet::new();
    let mut sources =
        vec![std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).expect("alerts")];
    for d in ["network.json", "node.json"] {
        let text = std::fs::read_to_string(deploy().join("grafana/dashboards").join(d))
            .expect("dashboard");
        let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        assert!(
            json["panels"].as_array().is_some_and(|p| !p.is_empty()),
            "{d} has panels"
        );
        sources.push(text);
    }
    for text in sources {
        for (i, _) in text.match_indices("baton_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            queried.insert(name);
        }
    }
    let missing: Vec<_> = queried.iter().filter(|q| !exported.contains(*q)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    assert!(
        queried.len() >= 15,
        "dashboards cover the node: {queried:?}"
    );
}

#[test]
fn kubernetes_manifests_parse_and_match_the_node_config() {
    let mut docs = Vec::new();
    for f in [
        "namespace.yaml",
        "config.yaml",
        "services.yaml",
        "statefulset.yaml",
    ] {
        docs.extend(yaml(&deploy().join("k8s").join(f)));
    }
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config_text = find("ConfigMap", "baton-config")["data"]["config.toml"]
        .as_str()
        .expect("config.toml");
    let cfg: NodeConfig = toml::from_str(config_text).expect("the ConfigMap's config parses");
    cfg.validate().expect("and validates");

    let sts = find("StatefulSet", "baton");
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = |name: &str| -> u64 {
        container["ports"]
            .as_sequence()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("container port {name}"))
    };
    assert_eq!(port("grpc"), u64::from(cfg.grpc.listen_addr.port()));
    assert_eq!(port("metrics"), u64::from(cfg.metrics.listen_addr.port()));
    assert!(cfg
        .p2p
        .listen_addr
        .ends_with(&format!("/tcp/{}", port("p2p"))));
    for (svc, name) in [
        ("baton-p2p", "p2p"),
        ("baton-grpc", "grpc"),
        ("baton-metrics", "metrics"),
    ] {
        let p = find("Service", svc)["spec"]["ports"][0]["port"]
            .as_u64()
            .expect("service port");
        assert_eq!(p, port(name), "service {svc}");
    }
    assert_eq!(sts["spec"]["serviceName"], "baton-p2p");

    // Mounts: data, config, genesis and keys where the config and the command expect them.
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["mountPath"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let at = |name: &str| -> PathBuf {
        PathBuf::from(
            &mounts
                .iter()
                .find(|m| m.0 == name)
                .unwrap_or_else(|| panic!("mount {name}"))
                .1,
        )
    };
    assert_eq!(cfg.data_dir, at("data"));
    assert_eq!(cfg.genesis_file.parent(), Some(at("genesis").as_path()));
    assert_eq!(cfg.key_file.parent(), Some(at("keys").as_path()));
    let args = strs(&container["args"]).join(" ");
    assert!(
        args.contains(&format!("--config {}/config.toml", at("config").display())),
        "{args}"
    );
    assert!(
        args.contains(&format!(
            "--key-file {}/node${{HOSTNAME##*-}}.toml",
            at("keys").display()
        )),
        "{args}"
    );
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
}
