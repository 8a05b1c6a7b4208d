"""A Puppet server for the e2e tests: Debian's `puppetserver` (JVM), run as a process of
the test with every directory of its own (configuration, code, CA and certificates,
logs) under a temporary root, so nothing of the host's /etc/puppet is read or changed.

Autosigning is on: an agent's first run sends its certificate request and gets its
catalog in the same run. The server's certificate is for the name `puppet` (the agent's
default server name), which the guest resolves to the host's address.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

SYSTEM_CONF = Path("/etc/puppet/puppetserver")
INSTALL_DIR = Path("/usr/share/puppetserver")
SERVER_NAME = "puppet"
HEAP = "512m"  # the package's default is 1 GiB; one JRuby instance needs far less


def available() -> bool:
    return (INSTALL_DIR / "puppetserver.jar").exists() and shutil.which("java") is not None


class PuppetServer:
    def __init__(self, root: Path, port: int, manifest: str) -> None:
        self.root, self.port = root, port
        self.proc: subprocess.Popen | None = None
        self.log_path = root / "puppetserver.log"
        conf = root / "conf.d"
        conf.mkdir(parents=True)
        for name in ("auth.conf", "ca.conf", "metrics.conf", "web-routes.conf"):
            shutil.copyfile(SYSTEM_CONF / "conf.d" / name, conf / name)
        (root / "logback.xml").write_text(LOGBACK)
        (conf / "global.conf").write_text(f'global: {{ logging-config: "{root}/logback.xml" }}\n')
        (conf / "webserver.conf").write_text(
            f"webserver: {{\n  client-auth: want\n  ssl-host: 0.0.0.0\n  ssl-port: {port}\n}}\n"
        )
        etc, code = root / "etc", root / "code"
        (conf / "puppetserver.conf").write_text(f"""\
jruby-puppet: {{
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: {root}/gems
    gem-path: [{root}/gems, "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: {etc}
    server-code-dir: {code}
    server-var-dir: {root}/var
    server-run-dir: {root}/run
    server-log-dir: {root}/log
    max-active-instances: 1
}}
http-client: {{}}
profiler: {{}}
""")
        etc.mkdir()
        (etc / "puppet.conf").write_text(f"""\
[main]
vardir = {root}/var
logdir = {root}/log
rundir = {root}/run
ssldir = {root}/ssl
codedir = {code}

[server]
cadir = {root}/ca
certname = {SERVER_NAME}
dns_alt_names = {SERVER_NAME}
autosign = true
""")
        manifests = code / "environments/production/manifests"
        manifests.mkdir(parents=True)
        (manifests / "site.pp").write_text(manifest)
        for sub in ("var", "log", "run", "ssl", "gems"):
            (root / sub).mkdir()

    def start(self) -> PuppetServer:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            ["java", f"-Xms{HEAP}", f"-Xmx{HEAP}", "-Dlogappender=STDOUT",
             "-Djruby.lib=/usr/share/jruby/lib", "-XX:+CrashOnOutOfMemoryError",
             "-jar", str(INSTALL_DIR / "puppetserver.jar"),
             "--config", str(self.root / "conf.d"),
             "--bootstrap-config", str(SYSTEM_CONF / "services.d")],
            cwd=INSTALL_DIR, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.root)},
        )  # fmt: skip
        log.close()
        return self

    def wait(self, timeout: float = 600) -> None:
        """Until the server answers its status as running (the JVM and JRuby take a
        minute or two to start on a loaded 2-core machine)."""
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.port}/status/v1/simple"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"puppetserver exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(url, context=insecure, timeout=5) as answer:
                    if answer.read().strip() == b"running":
                        return
            except OSError:
                pass
            time.sleep(2)
        raise TimeoutError(f"puppetserver did not start in {timeout} s: {self.log()[-3000:]}")

    def signed(self) -> list[str]:
        """The agents' certificates the CA signed (file names under its signed dir)."""
        return sorted(p.stem for p in (self.root / "ca" / "signed").glob("*.pem"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


LOGBACK = """\
<configuration>
    <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
        <encoder><pattern>%d %-5p [%c{2}] %m%n</pattern></encoder>
    </appender>
    <root level="info"><appender-ref ref="STDOUT"/></root>
</configuration>
"""
