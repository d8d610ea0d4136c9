#!/bin/sh
# Builds deskpulse-agent-VERSION.pkg on a Mac, from the unpacked tarball of
# `cargo xtask dist` (a .pkg cannot be built on Linux). pkgbuild comes with
# the Xcode command line tools.
#
#   ./build-pkg.sh                       # unsigned, for testing
#   ./build-pkg.sh "Developer ID Installer: Example Corp (TEAMID)"   # signed
#
# For distribution, sign the binary before (codesign --sign "Developer ID
# Application: ..." --options runtime --timestamp deskpulse-agent) and
# notarize the .pkg after (xcrun notarytool submit ... --wait; xcrun
# stapler staple ...).
#
# The package installs /usr/local/bin/deskpulse-agent; its postinstall
# enrolls from /Library/Application Support/Deskpulse/enroll.toml (keys
# collector, token, ca_sha256) when that holds a token, then runs
# `deskpulse-agent service install`: the launchd daemon
# /Library/LaunchDaemons/com.deskpulse.agent.plist (as in this directory),
# a default config when none exists, and the state dir
# /Library/Application Support/Deskpulse/agent. Installing a newer package
# upgrades in place and keeps the config and the enrollment.
set -eu
sign_identity=${1:-}
cd "$(dirname "$0")"
version=$(cat VERSION)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin"
cp deskpulse-agent "$root/usr/local/bin/deskpulse-agent"
chmod 0755 "$root/usr/local/bin/deskpulse-agent"
set -- --root "$root" --identifier com.deskpulse.agent --version "$version" \
    --scripts scripts --install-location / "deskpulse-agent-$version.pkg"
if [ -n "$sign_identity" ]; then
    set -- --sign "$sign_identity" "$@"
fi
pkgbuild "$@"
echo "built deskpulse-agent-$version.pkg"
