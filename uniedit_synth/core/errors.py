"""The exceptions a user can cause; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import signal
import threading


class UniEditError(Exception):
    """Base of every error caused by user input or environment (config, source, output dir, keys)."""

    exit_code = 2


class ConfigError(UniEditError):
    """The pipeline YAML or a CLI option is invalid."""


class UnsafeYAML(ConfigError):
    """A YAML document refused before it is built: its aliases expand too far, or it is nested too deeply."""


class SourceError(UniEditError):
    """A VQA source cannot be opened or read at all (single bad records are rejects, not errors)."""


class OutputDirError(UniEditError):
    """The output directory cannot be used (locked, unwritable, made with another config)."""


class RunLockedError(OutputDirError):
    """Another live process holds the output directory's lock."""


class ConfigChangedError(OutputDirError):
    """The output directory was made with a different pipeline config."""


class BackendConfigError(UniEditError):
    """A backend is unknown, misconfigured or lacks its API key."""


class AuthenticationFailed(UniEditError):
    """A provider rejected the API key (HTTP 401/403): the run stops, nothing more is paid."""


class ProviderUnreachable(UniEditError):
    """A provider stayed unreachable after the retries (connection refused, DNS, TLS, timeouts): an outage, so
    the run stops with the shards in flight unfinished, and a rerun picks them up (never a reject)."""


class RuntimeBusy(UniEditError):
    """This process already runs a Ray synthesis; a second one at the same time cannot share its Ray driver."""


class DiskFullError(OutputDirError):
    """The output filesystem is full or refused a write; the run stops and can be resumed later."""


class ExportError(UniEditError):
    """An export cannot run: the run dir is missing or not a run, the out dir is in the way, or an option is invalid."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, a container stop): handled like Ctrl-C, so finished shards stay finished,
    the run is marked interrupted and a rerun resumes; the CLI exits 143 (128 + 15)."""


#: set once a SIGTERM arrived (typer reports any KeyboardInterrupt as one exit code; this tells them apart)
TERMINATED = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:
    TERMINATED.set()
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM raise Terminated in the main thread (again after Ray's init, which installs its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
