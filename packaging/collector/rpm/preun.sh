# deskpulse-collector %preun ($1: 0 on erase, 1 on upgrade): stops and
# disables the service on erase only.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now deskpulse-collector.service >/dev/null 2>&1 || :
fi
exit 0
