# Entry points for humans and CI. Each target delegates to a script so it also works without make.
.PHONY: package

# Builds dist/siem-forwarder_<version>-1_amd64.deb and the .rpm (needs root; see packaging/build.sh).
package:
	packaging/build.sh
