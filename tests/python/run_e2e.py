"""Run the official Python client's own e2e suite (`kubernetes/e2e_test`) unmodified
against the cluster in $KUBECONFIG.

The suite is not in the client's PyPI sdist (kubernetes==37.0.2 ships the library and its
unit tests only), and CI cannot reach GitHub, so it is vendored under
`vendor/kubernetes_e2e/kubernetes/e2e_test/` (Apache-2.0, its LICENSE alongside; source and commit in
`vendor/README.md`) and mounted as `kubernetes.e2e_test` on the installed client's package
path, exactly where its tests import it from.

Tests that cannot run here are skipped with their reason (SKIP); every other test must
pass. The skip list is `e2e_skip.txt` (one `<test id suffix> <reason>` a line). Prints `python e2e: <run> run, <skipped> skipped, <failed> failed`.
"""

import faulthandler
import os
import sys
import unittest

import kubernetes

HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR = os.path.join(HERE, "vendor", "kubernetes_e2e")
kubernetes.__path__.append(os.path.join(VENDOR, "kubernetes"))

MODULES = [
    "kubernetes.e2e_test.test_client",
    "kubernetes.e2e_test.test_apps",
    "kubernetes.e2e_test.test_batch",
    "kubernetes.e2e_test.test_watch",
    "kubernetes.e2e_test.test_utils",
    "kubernetes.e2e_test.test_informer",
    "kubernetes.e2e_test.test_issue_2387_proxy_ssl_context",
]

# test id suffix -> why it cannot run against a test server (`e2e_skip.txt`).
SKIP = {}
with open(os.path.join(HERE, "e2e_skip.txt")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, why = line.partition(" ")
                # `pods:` entries need a kubelet and a docker.io mirror: the Rust test
                # provides both and says so with RAMPART_E2E_PODS=1.
                if why.startswith("pods:") and os.environ.get("RAMPART_E2E_PODS") == "1":
                    continue
                SKIP[name] = why.strip() or "listed"


def skip_listed(suite):
    out = unittest.TestSuite()
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            out.addTest(skip_listed(t))
            continue
        why = next((w for k, w in SKIP.items() if t.id().endswith(k)), None)
        if why is not None:
            setattr(t, t._testMethodName, unittest.skip(why)(getattr(t, t._testMethodName)))
        out.addTest(t)
    return out


def main():
    if not os.environ.get("KUBECONFIG"):
        print("KUBECONFIG is not set", file=sys.stderr)
        return 2
    # The suite opens its YAML fixtures relative to the client's source tree.
    os.chdir(VENDOR)
    # A hung test prints every thread's stack and ends the run before the Rust test's own
    # bound (240 s) kills it without a word.
    faulthandler.dump_traceback_later(200, exit=True)
    names = sys.argv[1:] or MODULES
    suite = skip_listed(unittest.defaultTestLoader.loadTestsFromNames(names))
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print(
        "python e2e: %d run, %d skipped, %d failed"
        % (result.testsRun, len(result.skipped), failed)
    )
    for test, why in result.skipped:
        print("skipped: %s: %s" % (test.id(), why))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
