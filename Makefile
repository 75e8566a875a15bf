# Entry points for humans and CI. Each target delegates to a script so it also works without make.
.PHONY: package test demo

# Sets up .venv and the Debian test dependencies, then runs the whole test suite.
test:
	scripts/test

# Sets up .venv and runs the forwarder end to end on the built-in demo.
demo:
	scripts/demo

# Builds dist/siem-forwarder_<version>-1_amd64.deb and the .rpm (needs root; see packaging/build.sh).
package:
	packaging/build.sh
