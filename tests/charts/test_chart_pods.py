"""The chart's pod-shaping values (global `gateway.backend`, per profile),
option fields and raw `extraConfig`, rendered by the real helm and read by
the real gateway binary (`check-config`), which refuses a bad key by name."""

import subprocess
import tomllib

import yaml

from test_chart import CHART, helm, render

# A node pool profile (the JupyterHub recipe's), a GPU profile, every global
# pod key, daskhub's `image` option and the other field types.
VALUES = {
    "imagePullSecrets": [{"name": "chart-pull"}],
    "gateway": {
        "workerImage": {"repository": "dask-rs/worker", "tag": "1", "pullPolicy": "Always"},
        "backend": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "everyone", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "serviceAccount": "dask-pods",
            "labels": {"example.com/team": "geo"},
            "annotations": {"example.com/note": 'a "quoted" <note>'},
            "schedulerCores": 0.25,
            "schedulerMemory": "2 GiB",
            "schedulerCoresLimit": 2,
            "workerExtraPodConfig": {"terminationGracePeriodSeconds": 45, "priorityClassName": "low"},
        },
        "cluster": {"environment": {"EXTRA": "1"}},
        "profiles": [
            {"name": "pool", "workerCores": 0.5, "workerMemory": "1 GiB", "workerCoresLimit": 1, "workerMemoryLimit": "2 GiB",
             "nodeSelector": {"pool": "dask-workers"},
             "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}]},
            {"name": "gpu", "workerCores": 4, "workerMemory": "16 GiB", "workerThreads": 2, "image": "pangeo/ml:1",
             "environment": {"CUDA": "1"}, "workerExtraContainerConfig": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
        ],
        "options": {"fields": [
            {"field": "image", "type": "string", "default": "pangeo/pangeo-notebook:2025.01.10", "target": "image"},
            {"field": "threads", "label": "Threads", "type": "int", "default": 1, "min": 1, "max": 4, "target": "worker_threads"},
            {"field": "size", "type": "select", "options": ["a", "b"], "default": "b"},
            {"field": "env", "type": "mapping", "default": {"A": "x"}, "target": "environment"},
            {"field": "ratio", "type": "float", "default": 0.5, "min": 0, "max": 1},
            {"field": "debug", "type": "bool", "default": False},
        ]},
    },
}


def rendered(tmp_path, values, *extra):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render("-f", str(path), *extra)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway"))
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway"))
    return config["data"], deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def check(tmp_path, files):
    """The real gateway's check-config on the ConfigMap's files, in the Deployment's order."""
    from gatewaylib import gateway_bin
    args = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        args += ["--config", str(tmp_path / name)]
    return subprocess.run([gateway_bin(), *args, "check-config"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"})


def test_pod_values_render_to_a_config_the_gateway_accepts(tmp_path):
    data, args = rendered(tmp_path, VALUES)
    config = tomllib.loads(data["gateway.toml"])
    backend = config["backend"]
    assert backend["image"] == "dask-rs/worker:1" and backend["image_pull_policy"] == "Always"
    assert backend["image_pull_secrets"] == [{"name": "chart-pull"}], "the chart's pull secrets by default"
    assert backend["node_selector"] == {"kubernetes.io/os": "linux"}
    assert backend["annotations"] == {"example.com/note": 'a "quoted" <note>'}
    assert backend["affinity"] == VALUES["gateway"]["backend"]["affinity"]
    assert backend["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert (backend["scheduler_cores"], backend["scheduler_memory"], backend["scheduler_cores_limit"]) == (0.25, "2 GiB", 2)
    assert backend["worker_extra_pod_config"] == {"terminationGracePeriodSeconds": 45, "priorityClassName": "low"}
    assert "scheduler_memory_limit" not in backend and "scheduler_extra_pod_config" not in backend, "unset stays unset"
    assert config["cluster"]["environment"] == {"EXTRA": "1"}
    pool, gpu = config["options"]["profiles"]
    assert pool == {"name": "pool", "worker_cores": 0.5, "worker_memory": "1 GiB", "worker_cores_limit": 1,
                    "worker_memory_limit": "2 GiB", "node_selector": {"pool": "dask-workers"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}]}
    assert gpu["worker_threads"] == 2 and gpu["image"] == "pangeo/ml:1" and gpu["environment"] == {"CUDA": "1"}
    assert gpu["worker_extra_container_config"] == {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    fields = config["options"]["fields"]
    assert fields[0] == {"field": "image", "type": "string", "default": "pangeo/pangeo-notebook:2025.01.10", "target": "image"}
    assert fields[1]["min"] == 1 and fields[3]["default"] == {"A": "x"} and fields[5]["default"] is False
    assert "extra.toml" not in data and args == ["--config", "/etc/dask-gateway/gateway.toml"]
    proc = check(tmp_path, {"gateway.toml": data["gateway.toml"]})
    assert proc.returncode == 0, proc.stderr
    assert "config ok: 2 profile(s), kubernetes backend" in proc.stdout


def test_a_bad_pod_value_the_schema_allows_is_refused_by_the_gateway_naming_it(tmp_path):
    values = yaml.safe_load(yaml.safe_dump(VALUES))
    values["gateway"]["profiles"][0]["tolerations"] = [{"key": "dedicated", "operater": "Equal"}]
    data, _ = rendered(tmp_path, values)
    proc = check(tmp_path, {"gateway.toml": data["gateway.toml"]})
    assert proc.returncode != 0 and "options.profiles[0].tolerations" in proc.stderr and "operater" in proc.stderr, proc.stderr
    values["gateway"]["profiles"][0]["tolerations"] = []
    values["gateway"]["profiles"][0]["workerMemoryLimit"] = "512 MiB"
    data, _ = rendered(tmp_path, values)
    proc = check(tmp_path, {"gateway.toml": data["gateway.toml"]})
    assert proc.returncode != 0 and "options.profiles[0].worker_memory_limit" in proc.stderr, proc.stderr


def test_extra_config_is_read_last_and_may_override_anything(tmp_path):
    values = yaml.safe_load(yaml.safe_dump(VALUES))
    values["gateway"]["extraConfig"] = ('[[options.profiles]]\nname = "only"\nworker_cores = 1\nworker_memory = "1 GiB"\n'
                                        '[backend]\nimage = "mine:2"\n')
    data, args = rendered(tmp_path, values)
    assert args == ["--config", "/etc/dask-gateway/gateway.toml", "--config", "/etc/dask-gateway/extra.toml"]
    proc = check(tmp_path, {"gateway.toml": data["gateway.toml"], "extra.toml": data["extra.toml"]})
    assert proc.returncode == 0, proc.stderr
    assert "config ok: 1 profile(s), kubernetes backend" in proc.stdout, "the extra profiles replace the rendered ones"
    # Its errors are the gateway's, naming the key.
    values["gateway"]["extraConfig"] = '[backend]\nimage_pull_policy = "Sometimes"\n'
    data, _ = rendered(tmp_path, values)
    proc = check(tmp_path, {"gateway.toml": data["gateway.toml"], "extra.toml": data["extra.toml"]})
    assert proc.returncode != 0 and "Sometimes" in proc.stderr and "extra.toml" in proc.stderr, proc.stderr


def test_the_schema_refuses_bad_pod_and_option_values():
    for setting, word in [
        ("gateway.backend.imagePullPolicy=Sometimes", "imagePullPolicy"),
        ("gateway.backend.bogus=1", "bogus"),
        ("gateway.profiles[0].nodeSelector.pool=1", "nodeSelector"),
        ("gateway.profiles[0].workerCoresLimit=0", "workerCoresLimit"),
        ("gateway.options.fields[0].type=list", "type"),
        ("gateway.options.fields[0].target=cores", "target"),
        ("gateway.backend.schedulerMemory=true", "schedulerMemory"),
    ]:
        extra = ["--set", "gateway.options.fields[0].field=x"] if "fields" in setting else []
        bad = helm("template", "t", str(CHART), *extra, "--set", setting, check=False)
        assert bad.returncode != 0 and word in bad.stderr, (setting, bad.stderr)
