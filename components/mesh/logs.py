"""One short line per log event on stderr: nerve's own lines at the chosen level, the libraries' from warn up."""

import sys

import txaio
from twisted.logger import FilteringLogObserver, LogLevel, PredicateResult, formatEvent, globalLogBeginner

# Autobahn says these at warn or info on every (re)connect attempt; the runner says once what it is waiting for.
_RETRY_NARRATION = ("trying transport", "Connection failed")


def configure_logging(level, name):
    """Send Twisted/txaio logging to stderr as one short line per event, at or above level."""

    def write(event):
        text = formatEvent(event)
        if event.get("log_failure") is not None and event["log_level"] >= LogLevel.error:
            text += "\n" + event["log_failure"].getTraceback()
        sys.stderr.write(f"{name}: {text}\n")

    ours = LogLevel.levelWithName(level)
    # Autobahn and Twisted narrate every connect and signal at info; only nerve's own info lines are shown.
    theirs = ours if ours == LogLevel.debug else max(ours, LogLevel.warn)

    def predicate(event):
        namespace = event.get("log_namespace") or ""
        floor = ours if namespace.startswith("nerve") else theirs
        level = event["log_level"]
        if namespace.startswith("autobahn") and (event.get("log_format") or "").startswith(_RETRY_NARRATION):
            level = LogLevel.debug
        return PredicateResult.yes if level >= floor else PredicateResult.no

    globalLogBeginner.beginLoggingTo([FilteringLogObserver(write, [predicate])], redirectStandardIO=False)
    txaio.set_global_log_level(level)
