"""The compose stack, checked without a Docker engine: docker-compose.yml, docker/Dockerfile,
.dockerignore and .env.example.

``compose-spec.json`` beside this file is the Compose Specification's JSON schema, copied
unchanged from compose-spec/compose-spec (``schema/compose-spec.json``, Apache License 2.0), so
that the tests work from a clean clone and never touch the network.

Each check is a function returning a list of problems; the real files must give none, and
``test_checks_can_fail`` breaks the files in memory, one way at a time, to show that every
check notices.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
SCHEMA_PATH = Path(__file__).with_name("compose-spec.json")
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"

# The services built from the project's own Dockerfile, and what each must be.
APP_SERVICES = ("migrate", "bot", "worker-gpu", "worker-cpu")
LONG_RUNNING = ("bot", "worker-gpu", "worker-cpu")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET")
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
PURE_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}$")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/:@\s]+:(?P<password>\$\{[^}]*\}|[^@\s]+)@")
ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# Distribution names of the `ml` extra whose import name differs.
ML_IMPORT_NAMES = {"open_clip_torch": "open_clip"}


# --- loading ------------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_PATH.read_text())
    assert isinstance(doc, dict)
    return doc


def load_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert isinstance(schema, dict)
    return schema


def strings_in(value: Any) -> Iterator[str]:
    """Every string (keys included) in a YAML tree."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def referenced_variables(doc: dict[str, Any]) -> set[str]:
    """Names used as ${NAME} / $NAME anywhere in the compose file."""
    names: set[str] = set()
    for text in strings_in(doc):
        for match in INTERPOLATION.finditer(text):
            name = match.group("name") or match.group("bare")
            if name:
                names.add(name)
    return names


def with_defaults(text: str) -> str:
    """``text`` as compose would interpolate it with nothing set: defaults where given, a
    placeholder where a value is required."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("op") in (":-", "-"):
            return match.group("arg")
        return "PLACEHOLDER"

    return INTERPOLATION.sub(replace, text)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def argv_of(command: Any) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [with_defaults(arg) for arg in argv]


def documented_variables(text: str) -> dict[str, str]:
    """NAME -> example value of every ``NAME=...`` or ``# NAME=...`` line of .env.example."""
    found = {}
    for line in text.splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            found[match.group("name")] = match.group("value")
    return found


def settings_variables() -> set[str]:
    from config.settings import Settings

    return {name.upper() for name in Settings.model_fields}


def is_secret(name: str) -> bool:
    """A secret: a SecretStr setting, or a name that says so (POSTGRES_PASSWORD, AWS_SECRET_...)."""
    from config.settings import Settings

    field_info = Settings.model_fields.get(name.lower())
    if field_info is not None and "SecretStr" in repr(field_info.annotation):
        return True
    return bool(SECRET_NAME.search(name))


# --- the Dockerfile -----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def lines(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name (``FROM image AS name``), with their instructions; continuation lines
    joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else words[0]
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append((instruction, args.strip()))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = []
    while name in stages:
        chain.append(stages[name])
        name = stages[name].base
    return chain


def dockerfile_of(doc: dict[str, Any], service: str) -> tuple[Path, str]:
    build = doc["services"][service]["build"]
    if isinstance(build, str):
        return ROOT / build / "Dockerfile", ""
    context = ROOT / build.get("context", ".")
    return context / build.get("dockerfile", "Dockerfile"), build.get("target", "")


def command_of(doc: dict[str, Any], service: str, dockerfiles: dict[Path, str]) -> list[str]:
    """The service's command, or its image target's CMD."""
    spec = doc["services"][service]
    if "command" in spec:
        return argv_of(spec["command"])
    if "build" not in spec:
        return []
    path, target = dockerfile_of(doc, service)
    stages = parse_dockerfile(dockerfiles.get(path) or path.read_text())
    for stage in stage_chain(stages, target):
        if stage.lines("CMD"):
            return argv_of(json.loads(stage.lines("CMD")[-1]))
    return []


def copied_files(stages: dict[str, Stage], target: str) -> dict[str, str]:
    """Destination -> source (in the build context) of the COPY lines of ``target`` and its
    ancestors (COPY --from excluded)."""
    copies: dict[str, str] = {}
    for stage in stage_chain(stages, target):
        for args in stage.lines("COPY"):
            words = args.split()
            if any(w.startswith("--from") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            for source in paths[:-1]:
                copies.setdefault(paths[-1], source)
    return copies


# --- .dockerignore ------------------------------------------------------------------------------


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``relative`` (or a folder above it) out of the build context: the
    last matching pattern decides, ``!`` re-includes, ``**/`` matches at any depth."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            names = [
                "/".join(parts[i:j])
                for i in range(len(parts))
                for j in range(i + 1, len(parts) + 1)
            ]
            matched = any(fnmatch.fnmatchcase(name, tail) for name in names)
        else:
            matched = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if matched:
            ignored = not negate
    return ignored


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# --- the checks ---------------------------------------------------------------------------------


@dataclass
class Files:
    """The files under test, as text, so that the self-checks can break them in memory."""

    compose: dict[str, Any]
    dockerfiles: dict[Path, str]
    env_example: str
    dockerignore: str

    @classmethod
    def load(cls) -> Files:
        doc = load_compose()
        dockerfiles = {}
        for name, spec in doc["services"].items():
            if "build" in spec:
                path, _ = dockerfile_of(doc, name)
                if path.is_file():
                    dockerfiles[path] = path.read_text()
        return cls(doc, dockerfiles, ENV_EXAMPLE_PATH.read_text(), DOCKERIGNORE_PATH.read_text())

    def stages(self, service: str) -> tuple[dict[str, Stage], str]:
        path, target = dockerfile_of(self.compose, service)
        return parse_dockerfile(self.dockerfiles.get(path, "")), target


def schema_problems(files: Files) -> list[str]:
    validator = jsonschema.Draft7Validator(load_schema())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(files.compose)
    ]


def build_problems(files: Files) -> list[str]:
    problems = []
    for name in APP_SERVICES:
        spec = files.compose["services"].get(name, {})
        if "build" not in spec:
            problems.append(f"{name}: not built from the project's Dockerfile")
            continue
        path, target = dockerfile_of(files.compose, name)
        if path not in files.dockerfiles:
            problems.append(f"{name}: no Dockerfile at {path.relative_to(ROOT)}")
            continue
        stages, _ = files.stages(name)
        if target not in stages:
            problems.append(f"{name}: target {target!r} is not a stage of {path.name}")
    for path, text in files.dockerfiles.items():
        stages = parse_dockerfile(text)
        patterns = dockerignore_patterns(files.dockerignore)
        for stage in stages.values():
            for args in stage.lines("RUN") + stage.lines("COPY"):
                for source_stage in re.findall(r"--(?:mount=[^ ]*?)?from=([A-Za-z0-9_.-]+)", args):
                    if source_stage not in stages:
                        problems.append(f"{path.name} {stage.name}: no stage {source_stage!r}")
        for stage_name in stages:
            for source in copied_files(stages, stage_name).values():
                if source == ".":
                    continue
                if not (ROOT / source).exists():
                    problems.append(f"{path.name} {stage_name}: COPY of missing {source}")
                elif dockerignored(source, patterns):
                    problems.append(f"{path.name} {stage_name}: {source} is in .dockerignore")
    return problems


def pip_install_requirements(run: str) -> list[str]:
    """The requirement words of every ``pip install`` in a RUN line (options and their values
    left out)."""
    words: list[str] = []
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    for argv in commands:
        if "pip" not in argv or "install" not in argv:
            continue
        rest = argv[argv.index("install") + 1 :]
        skip = False
        for word in rest:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip = "=" not in word and word in ("-r", "-c", "-f", "-i", "--find-links")
            else:
                words.append(word)
    return words


def image_problems(files: Files) -> list[str]:
    """The bot image has no `ml` extra; the worker image has it; both run unprivileged and
    keep no pip cache."""
    problems = []
    targets = {
        name: files.stages(name)
        for name in APP_SERVICES
        if "build" in files.compose["services"].get(name, {})
    }
    for service, (stages, target) in targets.items():
        chain = stage_chain(stages, target)
        if not chain:
            continue
        installs = [
            args
            for stage in chain
            for args in stage.lines("RUN")
            if re.search(r"\bpip install\b", args)
        ]
        requirements = [word for args in installs for word in pip_install_requirements(args)]
        extra_ml = any(re.search(r"\[[^\]]*\bml\b", word) for word in requirements)
        ml_wheels = any(re.search(r"requirements-ml|builder-ml", args) for args in installs)
        if service.startswith("worker") and not extra_ml:
            problems.append(f"{service} ({target}): the install lacks the ml extra")
        if not service.startswith("worker") and (extra_ml or ml_wheels):
            problems.append(f"{service} ({target}): the install pulls in the ml extra")
        if not installs:
            problems.append(f"{service} ({target}): installs nothing")
        users = [u for stage in chain for u in stage.lines("USER")]
        if not users or users[0] in ("root", "0"):
            problems.append(f"{service} ({target}): runs as root")
        envs = " ".join(e for stage in chain for e in stage.lines("ENV"))
        no_cache = "PIP_NO_CACHE_DIR=1" in envs
        for args in installs:
            if not no_cache and "--no-cache-dir" not in args:
                problems.append(f"{service} ({target}): pip keeps its cache: {args[:60]}")
    return problems


def hps_command_problems(argv: list[str], target: str) -> list[str]:
    from cli.main import build_parser

    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        return [f"`{shlex.join(argv)}` is not a valid hps command line"]
    if not hasattr(args, "handler"):
        return [f"`{shlex.join(argv)}` selects no hps command"]
    if args.command == "worker" and target != "worker":
        return [f"`{shlex.join(argv)}` runs in the {target!r} image, not the worker image"]
    return []


def celery_command_problems(argv: list[str], broker_url: str, ports: list[str]) -> list[str]:
    from celery.app.utils import find_app

    options = dict(re.findall(r"^--?([a-zA-Z-]+)=(.*)$", "\n".join(argv[1:]), re.MULTILINE))
    for flag in ("-A", "--app"):
        if flag in argv:
            options["app"] = argv[argv.index(flag) + 1]
    if "app" in options:
        try:
            find_app(options["app"])
        except Exception as exc:
            return [f"`{shlex.join(argv)}`: celery app {options['app']!r}: {exc}"]
        return []
    if "broker" not in options:
        return [f"`{shlex.join(argv)}`: neither -A nor --broker"]
    problems = []
    if options["broker"] != broker_url:
        problems.append(f"`{shlex.join(argv)}`: broker is not the workers' {broker_url}")
    if "flower" in argv:
        port = options.get("port", "5555")
        if not any(str(p).endswith(f":{port}") or str(p) == port for p in ports):
            problems.append(f"`{shlex.join(argv)}`: port {port} is not published")
    return problems


def command_problems(files: Files) -> list[str]:
    problems = []
    services = files.compose["services"]
    broker_url = environment_of(services.get("bot", {})).get("BROKER_URL", "")
    for name, spec in services.items():
        argv = command_of(files.compose, name, files.dockerfiles)
        if not argv or ("build" not in spec and argv[0] != "celery"):
            continue  # a stock image's own command (postgres, redis)
        target = files.stages(name)[1] if "build" in spec else ""
        if argv[0] == "hps":
            problems += [f"{name}: {p}" for p in hps_command_problems(argv, target)]
        elif argv[0] == "celery":
            ports = [str(p) for p in spec.get("ports", [])]
            problems += [f"{name}: {p}" for p in celery_command_problems(argv, broker_url, ports)]
        elif argv[0] == "alembic":
            ini = ROOT / "alembic.ini"
            location = re.search(r"^script_location\s*=\s*(\S+)", ini.read_text(), re.M)
            if not ini.is_file() or not location or not (ROOT / location[1] / "env.py").is_file():
                problems.append(f"{name}: alembic.ini or its script_location is missing")
        elif argv[0] in ("python", "python3") and len(argv) >= 2:
            stages, target = files.stages(name)
            if argv[1] == "-m":
                if importlib.util.find_spec(argv[2]) is None:
                    problems.append(f"{name}: no module {argv[2]}")
            else:
                source = copied_files(stages, target).get(argv[1])
                if source is None or not (ROOT / source).is_file():
                    problems.append(f"{name}: {argv[1]} is not copied into the {target} image")
        else:
            problems.append(f"{name}: unknown command {argv[0]!r}")
    return problems


def env_problems(files: Files) -> list[str]:
    documented = documented_variables(files.env_example)
    settings = settings_variables()
    services = files.compose["services"]
    used = referenced_variables(files.compose)
    for name in APP_SERVICES:
        used |= set(environment_of(services.get(name, {})))
    problems = [
        f"{v} is used in docker-compose.yml but not in .env.example"
        for v in sorted(used - set(documented))
    ]
    problems += [
        f"Settings field {v} is not documented in .env.example"
        for v in sorted(settings - set(documented))
    ]
    problems += [
        f".env.example documents {v}, which nothing reads"
        for v in sorted(set(documented) - settings - used)
        if not v.startswith("AWS_")  # read by boto3 for S3 storage
    ]
    for name in APP_SERVICES:
        env_file = services.get(name, {}).get("env_file")
        files_listed = env_file if isinstance(env_file, list) else [env_file]
        paths = [f if isinstance(f, str) else (f or {}).get("path") for f in files_listed]
        if ".env" not in paths:
            problems.append(f"{name}: secrets are not read from env_file .env")
    return problems


def secret_problems(files: Files) -> list[str]:
    problems = []
    for name, spec in files.compose["services"].items():
        for key, value in environment_of(spec).items():
            if is_secret(key) and value and not PURE_INTERPOLATION.match(value):
                problems.append(f"{name}: {key} has a literal value")
            for match in URL_CREDENTIALS.finditer(value):
                if not PURE_INTERPOLATION.match(match.group("password")):
                    problems.append(f"{name}: {key} has a literal password")
    documented = documented_variables(files.env_example)
    for key, value in documented.items():
        if is_secret(key) and value.strip():
            problems.append(f".env.example: {key} has a value; secrets belong in .env only")
    compose_text = yaml.safe_dump(files.compose)
    local_env = ROOT / ".env"
    if local_env.is_file():  # a developer's real secrets must never reach the compose file
        for key, value in documented_variables(local_env.read_text()).items():
            value = value.strip().strip("'\"")
            if is_secret(key) and len(value) >= 8 and value in compose_text:
                problems.append(f"docker-compose.yml contains the value of {key} from .env")
    return problems


def dependency_problems(files: Files) -> list[str]:
    services = files.compose["services"]
    problems = []

    def conditions(name: str) -> dict[str, str]:
        depends = services.get(name, {}).get("depends_on", {})
        if isinstance(depends, list):
            return dict.fromkeys(depends, "service_started")
        return {key: value.get("condition", "") for key, value in depends.items()}

    wanted = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in LONG_RUNNING:
        have = conditions(name)
        for dependency, condition in wanted.items():
            if have.get(dependency) != condition:
                problems.append(f"{name}: depends_on {dependency} needs condition {condition}")
    if conditions("migrate").get("postgres") != "service_healthy":
        problems.append("migrate: depends_on postgres needs condition service_healthy")
    if services.get("migrate", {}).get("restart", "no") != "no":
        problems.append("migrate: a one-shot service must not restart")
    for name in services:
        for dependency, condition in conditions(name).items():
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
            elif condition == "service_healthy" and "healthcheck" not in services[dependency]:
                problems.append(f"{name}: waits for {dependency} to be healthy; it has no check")
    postgres_check = services.get("postgres", {}).get("healthcheck", {}).get("test", [])
    if "pg_isready" not in " ".join(postgres_check):
        problems.append("postgres: the healthcheck does not use pg_isready")
    return problems


def gpu_problems(files: Files) -> list[str]:
    from cli.main import build_parser

    services = files.compose["services"]
    problems = []

    def gpu_reservations(name: str) -> list[dict[str, Any]]:
        deploy = services.get(name, {}).get("deploy", {})
        devices = deploy.get("resources", {}).get("reservations", {}).get("devices", [])
        return [
            d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
        ]

    if not gpu_reservations("worker-gpu"):
        problems.append("worker-gpu: no NVIDIA GPU reservation (driver nvidia, capabilities gpu)")
    for name in services:
        if not name.startswith("worker-gpu") and gpu_reservations(name):
            problems.append(f"{name}: reserves a GPU")
    for name, queue, pool in (("worker-gpu", "gpu", "solo"), ("worker-cpu", "default", None)):
        argv = command_of(files.compose, name, files.dockerfiles) if name in services else []
        if argv[:2] != ["hps", "worker"]:
            problems.append(f"{name}: is not an `hps worker`")
            continue
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            continue  # reported by command_problems
        if args.queues != queue:
            problems.append(f"{name}: serves queues {args.queues!r}, not {queue!r}")
        if pool and args.pool != pool:
            problems.append(f"{name}: pool {args.pool!r}, not {pool!r}")
    return problems


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name (or host path) of a service's mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and ":" in volume:
            source, target = volume.split(":")[:2]
            mounts[target.rstrip("/")] = source
        elif isinstance(volume, dict):
            mounts[str(volume.get("target", "")).rstrip("/")] = str(volume.get("source", ""))
    return mounts


def volume_holding(mounts: dict[str, str], folder: str) -> str | None:
    """The source of the innermost mount that ``folder`` lies in."""
    holders = [t for t in mounts if folder == t or folder.startswith(t + "/")]
    return mounts[max(holders, key=len)] if holders else None


def storage_problems(files: Files) -> list[str]:
    """STORAGE_URL's folder is on one named volume, at one path, in the bot and every worker
    (or it is s3://); the workers have a named volume at MODELS_DIR."""
    services = files.compose["services"]
    named_volumes = set(files.compose.get("volumes") or {})
    problems = []
    shared: dict[str, tuple[str, str | None]] = {}
    for name in LONG_RUNNING:
        spec = services.get(name, {})
        storage = with_defaults(environment_of(spec).get("STORAGE_URL", ""))
        if storage.startswith("s3://"):
            shared[name] = (storage, None)
            continue
        if not storage.startswith("file:///"):
            problems.append(f"{name}: STORAGE_URL {storage!r} is neither file:/// nor s3://")
            continue
        folder = storage.removeprefix("file://")
        volume = volume_holding(mounts_of(spec), folder)
        if volume not in named_volumes:
            problems.append(f"{name}: {folder} is not on a named volume")
        shared[name] = (folder, volume)
    if len(set(shared.values())) > 1:
        problems.append(f"the bot and the workers do not share the image store: {shared}")
    for name in ("worker-gpu", "worker-cpu"):
        spec = services.get(name, {})
        models_dir = environment_of(spec).get("MODELS_DIR", "")
        if not models_dir or volume_holding(mounts_of(spec), models_dir) not in named_volumes:
            problems.append(f"{name}: MODELS_DIR {models_dir!r} is not on a named volume")
    return problems


def dockerignore_problems(files: Files) -> list[str]:
    patterns = dockerignore_patterns(files.dockerignore)
    problems = [
        f".dockerignore lets {path} into the build context"
        for path in (".env", ".env.production", "config/.env", ".venv", ".git", "data")
        if not dockerignored(path, patterns)
    ]
    problems += [
        f".dockerignore leaves out {path}, which the image build needs"
        for path in ("pyproject.toml", "README.md", "cli/main.py")
        if dockerignored(path, patterns)
    ]
    return problems


def bot_services(files: Files) -> list[str]:
    """The services that run ``hps bot``: ``bot`` and the shard processes."""
    return [
        name
        for name in files.compose["services"]
        if command_of(files.compose, name, files.dockerfiles)[:2] == ["hps", "bot"]
    ]


def shard_problems(files: Files) -> list[str]:
    """Every ``hps bot`` service is set up as ``bot`` is (env_file, dependencies, the image
    store); any but ``bot`` sits behind a profile (never beside ``bot`` by default); the shard
    processes agree on SHARD_COUNT, pass the settings' validation, and their SHARD_IDS cover
    0..SHARD_COUNT-1 exactly once between them."""
    from config import load_settings

    services = files.compose["services"]
    problems = []
    bots = bot_services(files)
    if "bot" not in bots:
        return ["bot: is not an `hps bot`"]
    reference = services["bot"]
    for name in bots:
        spec = services[name]
        for key in ("env_file", "depends_on", "volumes"):
            if spec.get(key) != reference.get(key):
                problems.append(f"{name}: {key} differs from the bot service's")
        storage = environment_of(spec).get("STORAGE_URL")
        if storage != environment_of(reference).get("STORAGE_URL"):
            problems.append(f"{name}: STORAGE_URL differs from the bot service's")
        if name != "bot" and not spec.get("profiles"):
            problems.append(f"{name}: runs beside `bot` by default (give it a profile)")
    # profile(s) -> (the SHARD_COUNTs, every SHARD_IDS entry) of its shard processes
    groups: dict[tuple[str, ...], tuple[set[int | None], list[int]]] = {}
    for name in bots:
        env = environment_of(services[name])
        if "SHARD_IDS" not in env:
            continue
        try:
            settings = load_settings(shard_count=env.get("SHARD_COUNT"), shard_ids=env["SHARD_IDS"])
        except ValueError as exc:  # SettingsError: one line naming the variable
            problems.append(f"{name}: {exc}")
            continue
        profiles = tuple(sorted(services[name].get("profiles") or []))
        counts, shard_ids = groups.setdefault(profiles, (set(), []))
        counts.add(settings.shard_count)
        shard_ids += settings.shard_ids
    for profiles, (counts, shard_ids) in groups.items():
        if len(counts) != 1:
            problems.append(f"profile {profiles}: the shard processes disagree on SHARD_COUNT")
            continue
        count = counts.pop() or 0
        if sorted(shard_ids) != list(range(count)):
            problems.append(
                f"profile {profiles}: SHARD_IDS {sorted(shard_ids)} do not cover "
                f"0..{count - 1} once"
            )
    return problems


CHECKS: dict[str, Callable[[Files], list[str]]] = {
    "schema": schema_problems,
    "build": build_problems,
    "image": image_problems,
    "command": command_problems,
    "env": env_problems,
    "secret": secret_problems,
    "dependency": dependency_problems,
    "gpu": gpu_problems,
    "storage": storage_problems,
    "dockerignore": dockerignore_problems,
    "shards": shard_problems,
}


# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> Files:
    return Files.load()


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_stack(files: Files, check: str) -> None:
    assert CHECKS[check](files) == []


def test_services_present(files: Files) -> None:
    expected = {"postgres", "redis", "migrate", "bot", "worker-gpu", "worker-cpu", "flower"}
    assert expected <= set(files.compose["services"])


def test_the_bot_can_run_as_shard_processes(files: Files) -> None:
    """Besides `bot`, a profile of `hps bot` services that split the gateway shards."""
    sharded = [name for name in bot_services(files) if name != "bot"]
    assert len(sharded) >= 2
    for name in sharded:
        env = environment_of(files.compose["services"][name])
        assert env["SHARD_COUNT"] and env["SHARD_IDS"], name


def test_dotenv_is_ignored_by_git() -> None:
    lines = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert ".env" in lines or "/.env" in lines


def _break_dockerfile(files: Files, old: str, new: str) -> None:
    for path, text in files.dockerfiles.items():
        assert old in text, old
        files.dockerfiles[path] = text.replace(old, new)


def _set(path: str, value: Any) -> Callable[[Files], None]:
    def mutate(files: Files) -> None:
        *parents, last = path.split(".")
        node = files.compose
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


MUTATIONS: dict[str, tuple[str, Callable[[Files], None]]] = {
    "unknown key": ("schema", _set("services.bot.comand", ["hps", "run"])),
    "bad condition": ("schema", _set("services.bot.depends_on.migrate.condition", "done")),
    "missing target": ("build", _set("services.bot.build.target", "bots")),
    "missing dockerfile": ("build", _set("services.worker-cpu.build.dockerfile", "docker/Nope")),
    "bot with ml": (
        "image",
        lambda f: _break_dockerfile(
            f, "        hps-platform \\\n", "        'hps-platform[ml]' \\\n"
        ),
    ),
    "worker without ml": ("image", lambda f: _break_dockerfile(f, '"hps-platform[ml]"', "hps")),
    "root user": ("image", lambda f: _break_dockerfile(f, "USER hps\n", "USER root\n")),
    "renamed subcommand": ("command", _set("services.migrate.command", ["hps", "db", "upgrad"])),
    "hps worker in bot image": ("command", _set("services.bot.command", ["hps", "worker"])),
    "missing celery app": (
        "command",
        _set("services.flower.command", ["celery", "-A", "worker.nope", "flower"]),
    ),
    "other broker": (
        "command",
        _set("services.flower.command", ["celery", "--broker=redis://x:1/0", "flower"]),
    ),
    "script not copied": ("command", _set("services.bot.command", ["python", "/app/nope.py"])),
    "undocumented variable": (
        "env",
        _set("services.bot.environment.UNDOCUMENTED_THING", "${UNDOCUMENTED_THING:-1}"),
    ),
    "no env_file": ("env", _set("services.bot.env_file", None)),
    "literal password": ("secret", _set("services.postgres.environment.POSTGRES_PASSWORD", "pw")),
    "password in url": (
        "secret",
        _set("services.bot.environment.DATABASE_URL", "postgresql://hps:hunter2@postgres/hps"),
    ),
    "migrate only started": (
        "dependency",
        _set("services.worker-cpu.depends_on.migrate.condition", "service_started"),
    ),
    "no healthcheck": ("dependency", _set("services.redis.healthcheck", None)),
    "no gpu": ("gpu", _set("services.worker-gpu.deploy", None)),
    "gpu worker on prefork": (
        "gpu",
        _set("services.worker-gpu.command", ["hps", "worker", "--queues", "gpu"]),
    ),
    "unshared images": ("storage", _set("services.bot.volumes", ["other:/data"])),
    "no models volume": ("storage", _set("services.worker-gpu.volumes", ["hps-data:/data"])),
    "env in context": ("dockerignore", lambda f: setattr(f, "dockerignore", "data\n")),
    "overlapping shards": ("shards", _set("services.bot-shards-2-3.environment.SHARD_IDS", "1,2")),
    "a shard left out": ("shards", _set("services.bot-shards-2-3.environment.SHARD_IDS", "2")),
    "shard outside the count": (
        "shards",
        _set("services.bot-shards-2-3.environment.SHARD_IDS", "2,4"),
    ),
    "shard counts differ": ("shards", _set("services.bot-shards-2-3.environment.SHARD_COUNT", "8")),
    "shards beside bot": ("shards", _set("services.bot-shards-0-1.profiles", None)),
    "shards on other images": ("shards", _set("services.bot-shards-0-1.volumes", ["x:/data"])),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_can_fail(files: Files, mutation: str) -> None:
    check, mutate = MUTATIONS[mutation]
    broken = copy.deepcopy(files)
    mutate(broken)
    assert CHECKS[check](broken), f"the {check} check missed: {mutation}"


def test_undocumented_setting_is_reported(files: Files) -> None:
    """A Settings field missing from .env.example is reported."""
    broken = copy.deepcopy(files)
    broken.env_example = broken.env_example.replace("# SPLIT_SALT=", "# SPLIT_SALT_GONE=")
    assert any("SPLIT_SALT" in p for p in env_problems(broken))


def _ml_modules() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = []
    for requirement in project["optional-dependencies"]["ml"]:
        dist = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip()
        names.append(ML_IMPORT_NAMES.get(dist, dist.replace("-", "_").lower()))
    return names


def test_bot_image_commands_run_without_the_ml_extra(files: Files) -> None:
    """What runs in the bot image (migrate, the bot's entry point) imports with every package of
    the `ml` extra made unimportable, as in the image."""
    blocked = _ml_modules()
    assert "torch" in blocked
    script = f"""
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("not in the bot image: " + name)
sys.meta_path.insert(0, Block())
from cli.main import build_parser
build_parser().parse_args(["db", "upgrade"])
import migrations.runner
build_parser().parse_args(["bot"])
import bot.client
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_bot_entry_point_refuses_to_start_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main
    from config import get_settings

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["bot"]) == 2
    finally:
        get_settings.cache_clear()
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err
