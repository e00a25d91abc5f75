//! The files in `deploy/` agree with what the binary accepts and with each other: compose, Prometheus config and
//! alert rules (checked by `promtool`), Grafana dashboards (every metric they query exists), and the Kubernetes
//! manifests (the node config in the ConfigMap parses and validates; ports and mount paths line up). And each
//! validator sees only its own key: compose gives each its own key and data volumes, Kubernetes one StatefulSet (one
//! pod, one key Secret) per validator.

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
        init.contains("baton testnet --validators 4 --out /tmp/testnet --host-template 'node{i}'"),
        "{init}"
    );
    // It puts each key on that validator's own volume (the nodes' side is checked below and in
    // `each_compose_validator_has_its_own_key_volume_and_data_volume`).
    assert!(
        init.contains("/tmp/testnet/keys/node$$i.toml /keys$$i/node$$i.toml"),
        "{init}"
    );
    let init_volumes = strs(&services["init"]["volumes"]);
    for i in 0..4 {
        assert!(
            init_volumes.contains(&format!("node{i}-key:/keys{i}")),
            "{init_volumes:?}"
        );
    }
    for i in 0..4 {
        let cmd = strs(&services[format!("node{i}").as_str()]["command"]);
        assert_eq!(
            cmd,
            [
                "run",
                "--config",
                "/testnet/config.toml",
                "--key-file",
                &format!("/keys/node{i}.toml"),
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

    // One StatefulSet per validator (`baton-<i>`, one pod each), all alike but for the index.
    let sets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "StatefulSet").collect();
    assert_eq!(sets.len(), 4, "one StatefulSet per validator");
    for (i, sts) in sets.iter().enumerate() {
        assert_eq!(sts["metadata"]["name"], format!("baton-{i}").as_str());
        assert_eq!(sts["spec"]["replicas"].as_u64(), Some(1));
        assert_eq!(sts["spec"]["serviceName"], "baton-p2p");
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            labels["app"], "baton",
            "the Services select every validator"
        );
        assert_eq!(sts["spec"]["selector"]["matchLabels"], *labels);
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
            let svc = find("Service", svc);
            let p = svc["spec"]["ports"][0]["port"]
                .as_u64()
                .expect("service port");
            assert_eq!(p, port(name), "service {svc:?}");
            assert_eq!(svc["spec"]["selector"]["app"], "baton");
        }

        // Mounts: data, config, genesis and this validator's key where the config and the command expect them.
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
        assert_eq!(cfg.key_file.parent(), Some(at("key").as_path()));
        let args = strs(&container["args"]).join(" ");
        assert_eq!(
            args,
            format!(
                "run --config {}/config.toml --key-file {}/node{i}.toml --moniker baton-{i}",
                at("config").display(),
                at("key").display()
            )
        );
        let key = pod["volumes"]
            .as_sequence()
            .and_then(|vs| vs.iter().find(|v| v["name"] == "key"))
            .expect("key volume");
        assert_eq!(
            key["secret"]["secretName"],
            format!("baton-key-{i}").as_str()
        );
        let claim = &sts["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
    }
}

/// The path after `--key-file` in a command line.
fn key_file_arg(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--key-file")
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A validator's key is seen by that validator only (issue 16): every compose service running a node has its key
/// on a volume no other node mounts, and no two running services share a writable volume.
#[test]
fn each_compose_validator_has_its_own_key_volume_and_data_volume() {
    let compose = &yaml(&deploy().join("docker-compose.yml"))[0];
    let services = compose["services"].as_mapping().expect("services");
    // (service, volume, target, read-only) for every named volume mounted by a long-running service. `init` is the
    // one-shot that writes every key (it generates them) and exits before any node starts.
    let mut mounts = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        if name == "init" {
            continue;
        }
        for m in strs(&svc["volumes"]) {
            let mut parts = m.split(':');
            let (src, dst) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if src.starts_with('.') || src.starts_with('/') {
                continue; // a bind mount of files in this folder (Prometheus, Grafana)
            }
            let ro = parts
                .next()
                .is_some_and(|o| o.split(',').any(|o| o == "ro"));
            mounts.push((name.to_string(), src.to_string(), dst.to_string(), ro));
        }
    }
    let users = |vol: &str| -> BTreeSet<&str> {
        mounts
            .iter()
            .filter(|m| m.1 == vol)
            .map(|m| m.0.as_str())
            .collect()
    };
    let mut nodes = 0;
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        let Some(key) = key_file_arg(&strs(&svc["command"])) else {
            continue;
        };
        nodes += 1;
        let (_, vol, _, ro) = mounts
            .iter()
            .filter(|m| m.0 == name && key.starts_with(&format!("{}/", m.2)))
            .max_by_key(|m| m.2.len())
            .unwrap_or_else(|| panic!("{name}: no volume holds its key file {key}"));
        let others: Vec<_> = users(vol).into_iter().filter(|u| *u != name).collect();
        assert!(
            others.is_empty(),
            "{name}'s key {key} is on volume `{vol}`, which {others:?} mount too: each validator's key must be on \
             a volume of its own"
        );
        assert!(ro, "{name} mounts its key volume `{vol}` read-only");
    }
    assert_eq!(nodes, 4, "four validators in compose");
    for (svc, vol, _, ro) in &mounts {
        if !ro {
            let u = users(vol);
            assert_eq!(
                u.len(),
                1,
                "{svc} mounts volume `{vol}` writable, and {u:?} share it"
            );
        }
    }
}

/// A validator's key is seen by that validator only (issue 16): every Kubernetes pod that mounts a key Secret
/// runs one validator, no two workloads mount the same key Secret, and the runbook creates one Secret per key.
#[test]
fn each_kubernetes_validator_pod_mounts_only_its_own_key() {
    let docs = yaml(&deploy().join("k8s").join("statefulset.yaml"));
    let mut owner: std::collections::BTreeMap<String, String> = Default::default();
    let mut keys = BTreeSet::new();
    for sts in docs.iter().filter(|d| d["kind"] == "StatefulSet") {
        let name = sts["metadata"]["name"].as_str().expect("name").to_string();
        let pod = &sts["spec"]["template"]["spec"];
        let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
        // Every Secret the pod can read: secret volumes and projected ones.
        let mut secrets = BTreeSet::new();
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                secrets.insert(s.to_string());
            }
            for src in v["projected"]["sources"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if let Some(s) = src["secret"]["name"].as_str() {
                    secrets.insert(s.to_string());
                }
            }
        }
        for s in &secrets {
            assert_eq!(
                replicas, 1,
                "StatefulSet {name}: its {replicas} pods all mount Secret {s}, so every validator's key is in every \
                 pod: one workload (one pod) per validator key"
            );
            if let Some(other) = owner.insert(s.clone(), name.clone()) {
                panic!("Secret {s} is mounted by StatefulSets {other} and {name}: one key Secret per validator");
            }
        }
        let containers = pod["containers"]
            .as_sequence()
            .into_iter()
            .chain(pod["initContainers"].as_sequence())
            .flatten();
        for c in containers {
            let line: Vec<String> = strs(&c["command"])
                .into_iter()
                .chain(strs(&c["args"]))
                .flat_map(|a| a.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect();
            if let Some(k) = key_file_arg(&line) {
                assert!(
                    !k.contains('$'),
                    "StatefulSet {name}: the key file `{k}` is picked at run time from a mount holding other \
                     validators' keys too; each pod must mount only its own"
                );
                keys.insert(k);
            }
        }
    }
    assert_eq!(
        keys.len(),
        4,
        "four validators, each with its own key file: {keys:?}"
    );
    // The runbook fills each Secret with one key file, never the whole folder.
    let runbook = std::fs::read_to_string(deploy().join("README.md")).expect("deploy README");
    assert!(
        !runbook.contains("--from-file=testnet/keys/ ")
            && !runbook.contains("--from-file=testnet/keys/\n"),
        "the runbook loads every key into one Secret"
    );
    assert!(
        runbook.contains("create secret generic baton-key-$i --from-file=testnet/keys/node$i.toml"),
        "the runbook creates one Secret per validator key"
    );
}
