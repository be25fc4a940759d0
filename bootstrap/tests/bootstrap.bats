#!/usr/bin/env bats
# bootstrap.sh and uninstall.sh, run as an operator runs them, against a
# stand-in `docker` (this suite checks the file layout and the commands
# given; the end-to-end install on the Docker Engine is in the stack tests).
# BATS_AURORA_CLI names the real aurora-cli build: the node.toml the installer
# writes must pass its --check-config.

setup() {
  REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  T=$BATS_TEST_TMPDIR
  PREFIX=$T/opt/aurora
  ETC=$T/etc/aurora
  BIN=$T/usr/local/bin
  export DOCKER_LOG=$T/docker.log
  : > "$DOCKER_LOG"
  # The release as the installer unpacks it: compose/ and bin/aurora-cli.
  mkdir -p "$T/bundle/bin" "$T/stub"
  cp -R "$REPO/compose" "$T/bundle/compose"
  mkdir -p "$T/bundle/bootstrap"
  cp "$REPO/bootstrap/bootstrap.sh" "$REPO/bootstrap/uninstall.sh" "$T/bundle/bootstrap/"
  cp "${BATS_AURORA_CLI:?BATS_AURORA_CLI must name the aurora-cli binary}" "$T/bundle/bin/aurora-cli"
  # The stand-in docker: logs every call; `compose ps` reports one healthy
  # service, `compose version` a Compose v2.
  cat > "$T/stub/docker" <<'STUB'
#!/usr/bin/env bash
printf '%s\n' "$*" >> "$DOCKER_LOG"
case "$1 ${2:-}" in
  "compose version") echo "Docker Compose version v2.26.1" ;;
  "info "*) echo "stand-in docker" ;;
esac
if [ "$1" = compose ] && [[ " $* " == *" ps "* ]]; then echo "postgres healthy running"; fi
# What `down` leaves behind: a container and a volume of the project.
[ "$1 $2" != "ps -aq" ] || echo "c0ffee"
[ "$1 $2 $3" != "volume ls -q" ] || echo "aurora-aurora_pgdata"
exit 0
STUB
  chmod +x "$T/stub/docker"
  export PATH="$T/stub:$PATH"
  unset "${!INSTALL_AURORA_@}"
  # No health-monitor answers here: the lead's first join token is not waited for.
  export INSTALL_AURORA_TOKEN_WAIT_SECS=0
}

teardown() {
  # A test's background server (the release over HTTP), if it started one.
  if [ -s "$T/http.pid" ]; then kill "$(cat "$T/http.pid")" 2>/dev/null || true; fi
}

# The common flags: everything under $T.
install_args() {
  echo --non-interactive --prefix "$PREFIX" --etc-dir "$ETC" --bin-dir "$BIN" --bundle "$T/bundle"
}

lead() {
  # shellcheck disable=SC2046
  bash "$REPO/bootstrap/bootstrap.sh" $(install_args) --name aurora --role lead "$@"
}

# Every file under the install, its mode and content hash.
snapshot() {
  (cd "$T" && find opt etc usr -type f -o -type l 2>/dev/null | sort | while read -r f; do
    printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum < "$f" | cut -c1-16)"
  done)
}

value() { sed -n "s/^$1=//p" "$2"; }

@test "a lead installs: private files are mode 600, secrets are long and distinct, the stack starts" {
  run lead
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  for f in "$PREFIX/.credentials" "$ETC/node.toml" "$PREFIX/state/secrets/fleet.env" \
           "$PREFIX/state/secrets/node.env" "$PREFIX/state/secrets/wireguard/private.key"; do
    [ "$(stat -c %a "$f")" = 600 ] || { echo "$f is $(stat -c %a "$f")"; false; }
  done
  local all=()
  for k in ADMIN_TOKEN REPLICATION_PASSWORD POSTGRES_PASSWORD GARAGE_RPC_SECRET S3_SECRET_ACCESS_KEY; do
    all+=("$(value "$k" "$PREFIX/state/secrets/fleet.env")")
  done
  for k in REDIS_PASSWORD GRAFANA_ADMIN_PASSWORD; do
    all+=("$(value "$k" "$PREFIX/state/secrets/node.env")")
  done
  for s in "${all[@]}"; do [ "${#s}" -ge 25 ] || { echo "short secret: ${#s}"; false; }; done
  [ "$(printf '%s\n' "${all[@]}" | sort -u | wc -l)" -eq "${#all[@]}" ]
  # .credentials repeats what the operator needs, from the same files.
  [ "$(value ADMIN_TOKEN "$PREFIX/.credentials")" = "${all[0]}" ]
  [ "$(value GRAFANA_ADMIN_PASSWORD "$PREFIX/.credentials")" = "${all[6]}" ]
  grep -qx "compose --env-file $PREFIX/state/node.env up -d --remove-orphans" "$DOCKER_LOG"
  grep -qx "COMPOSE_FILE=$PREFIX/compose/compose.yaml" "$PREFIX/state/node.env"
  [ "$(readlink "$BIN/aurora-cli")" = "$PREFIX/bin/aurora-cli" ]
  # The real aurora-cli reads the config the installer wrote.
  run "$BIN/aurora-cli" --config "$ETC/node.toml" --check-config
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" != *"${all[0]}"* ]]
  # The stack's own address plan: the lead is .1 of the default network.
  grep -qx "AURORA_VPN_IP=10.0.0.1" "$PREFIX/state/node.env"
}

@test "a rerun changes nothing and rotates no secret" {
  lead >/dev/null 2>&1
  before=$(snapshot)
  [ -n "$before" ]
  run lead
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(snapshot)" = "$before" ] || { diff <(echo "$before") <(snapshot); false; }
}

@test "--dry-run prints every action and writes nothing" {
  run lead --dry-run
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ ! -e "$T/opt" ] && [ ! -e "$T/etc" ] && [ ! -e "$T/usr" ]
  [[ "$output" == *"[dry-run]"*"node-init.sh"* ]]
  [[ "$output" == *"[dry-run] docker compose --env-file $PREFIX/state/node.env up -d"* ]]
  [[ "$output" == *"[dry-run] $BIN/aurora-cli --config $ETC/node.toml asset-origin setup --fleet-env $PREFIX/state/secrets/fleet.env"* ]]
  # Only questions were asked of docker, nothing was changed.
  ! grep -vE '^(info|compose version)' "$DOCKER_LOG"
}

@test "a truncated copy runs nothing, wherever the download stopped" {
  local script="$REPO/bootstrap/bootstrap.sh" size cut
  size=$(stat -c %s "$script")
  # Every line end, and a spread of cuts inside lines, up to the last line
  # without its final character (that line is the one call; the script
  # minus only its final newline is whole).
  local cuts
  cuts=$( { grep -bo $'\n' "$script" | cut -d: -f1; seq 1 97 "$size"; seq $((size - 60)) $((size - 2)); } \
    | awk -v max=$((size - 2)) '$1 <= max' | sort -nu)
  for cut in $cuts; do
    head -c "$cut" "$script" > "$T/partial.sh"
    # shellcheck disable=SC2046
    bash -s -- $(install_args) --name aurora --role lead < "$T/partial.sh" >/dev/null 2>&1 || true
    if [ -e "$T/opt" ] || [ -s "$DOCKER_LOG" ]; then
      echo "a copy cut at byte $cut of $size did something:"; ls -R "$T/opt" 2>/dev/null; cat "$DOCKER_LOG"; false
    fi
  done
  # The whole script does run.
  # shellcheck disable=SC2046
  bash -s -- $(install_args) --name aurora --role lead < "$script" >/dev/null 2>&1
  [ -s "$PREFIX/state/secrets/fleet.env" ]
}

@test "bad answers given as flags exit 2 with one line naming the flag, and write nothing" {
  check() { # expected-substring args...
    local want=$1; shift
    # shellcheck disable=SC2046
    run bash "$REPO/bootstrap/bootstrap.sh" $(install_args) "$@"
    [ "$status" -eq 2 ] || { echo "exit $status for $*: $output"; false; }
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ] || { echo "not one line: $output"; false; }
    [[ "$output" == *"$want"* ]] || { echo "'$want' not in: $output"; false; }
    [ ! -e "$T/opt" ] || { echo "wrote files for $*"; false; }
  }
  check "--name: 'Aurora_1' is not a DNS label" --name Aurora_1 --role lead
  check "--name: '-x' is not a DNS label" --name -x --role lead
  check "--role: 'leed' is not a role" --name aurora --role leed
  check "--vpn-ip: 10.0.1.5 is outside the VPN network 10.0.0.0/24" --name aurora --role lead --vpn-ip 10.0.1.5
  check "--vpn-ip: 10.0.0.255 is the network's own or broadcast" --name aurora --role lead --vpn-ip 10.0.0.255
  check "--vpn-ip: '300.0.0.1' is not an IPv4 address" --name aurora --role lead --vpn-ip 300.0.0.1
  check "--vpn-network: '10.0.0.0' is not an IPv4 network" --name aurora --role lead --vpn-network 10.0.0.0
  check "--zone: 'Bad Zone' is not a DNS name" --name aurora --role lead --zone "Bad Zone"
  check "--name is required" --role lead
  check "--role is required" --name aurora
  check "--vpn-ip is required" --name c1 --role compute --fleet-env /dev/null
  check "unknown argument '--frobnicate'" --name aurora --role lead --frobnicate
  check "--name needs a value" --name
  check "a compute node joins an existing fleet: --token TOKEN" --name c1 --role compute --vpn-ip 10.0.0.3
  check "--token: not a whole Aurora join token" --name c1 --role compute --token K10abc::server:pass
  check "--token and --fleet-env" --name c1 --role compute --token "AJ1.$(printf %064d 0).0123456789abcdef.$(printf %064d 0).lead:8443" --fleet-env /dev/null
  check "--fleet-env: cannot read /nonexistent" --name c1 --role compute --vpn-ip 10.0.0.3 --fleet-env /nonexistent
  check "--prefix: 'relative' must be an absolute path" --name aurora --role lead --prefix relative
  check "--services: 'Grafana!' is not a service name" --name aurora --role lead --services "postgres Grafana!"
  check "--set: 'lower=x' is not KEY=VALUE" --name aurora --role lead --set lower=x
  local gid; gid=$(printf '%064d' 0)
  check "--garage-peer: 'aurora=abc@10.0.0.1:3901' is not NAME=ID@HOST:PORT" --name star --role lead --garage-peer aurora=abc@10.0.0.1:3901
  check "--garage-peer: '$gid@10.0.0.1:3901' is not NAME=ID@HOST:PORT" --name star --role lead --garage-peer "$gid@10.0.0.1:3901"
  check "--garage-peer: a compute node runs no Garage" --name c1 --role compute --vpn-ip 10.0.0.3 --fleet-env /dev/null --garage-peer "aurora=$gid@10.0.0.1:3901"
  check "--garage-peer: that is this node (aurora)" --name aurora --role lead --garage-peer "aurora=$gid@10.0.0.1:3901"
}

@test "the questions are asked again until the answer is valid" {
  printf '%s\n' "Aurora_1" "aurora" "leed" "lead" "10.9.9.9" "" > "$T/answers"
  INSTALL_AURORA_TTY=$T/answers run bash "$REPO/bootstrap/bootstrap.sh" \
    --prefix "$PREFIX" --etc-dir "$ETC" --bin-dir "$BIN" --bundle "$T/bundle"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"'Aurora_1' is not a DNS label"* ]]
  [[ "$output" == *"'leed' is not a role"* ]]
  [[ "$output" == *"10.9.9.9 is outside the VPN network"* ]]
  [[ "$output" == *"VPN IP? [10.0.0.1]"* ]]
  grep -qx "AURORA_VPN_IP=10.0.0.1" "$PREFIX/state/node.env"
  grep -qx "AURORA_PROJECT=aurora-aurora" "$PREFIX/state/node.env"
  # An answer that never comes is an error, not a default.
  printf 'x_\n' > "$T/answers2"
  rm -rf "$T/opt" "$T/etc" "$T/usr"
  INSTALL_AURORA_TTY=$T/answers2 run bash "$REPO/bootstrap/bootstrap.sh" --prefix "$PREFIX" --bundle "$T/bundle"
  [ "$status" -eq 2 ]
  [[ "$output" == *"no answer (end of input)"* ]]
  [ ! -e "$T/opt" ]
}

@test "every answer is also an environment variable" {
  INSTALL_AURORA_NAME=star INSTALL_AURORA_ROLE=lead INSTALL_AURORA_VPN_IP=10.1.0.7 \
    INSTALL_AURORA_VPN_NETWORK=10.1.0.0/16 INSTALL_AURORA_PREFIX=$PREFIX INSTALL_AURORA_ETC_DIR=$ETC \
    INSTALL_AURORA_BIN_DIR=$BIN INSTALL_AURORA_BUNDLE=$T/bundle INSTALL_AURORA_NON_INTERACTIVE=1 \
    INSTALL_AURORA_SERVICES=postgres,repl-manager \
    run bash "$REPO/bootstrap/bootstrap.sh"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  grep -qx "compose --env-file $PREFIX/state/node.env up -d --remove-orphans postgres repl-manager" "$DOCKER_LOG"
  grep -qx "AURORA_VPN_IP=10.1.0.7" "$PREFIX/state/node.env"
  grep -q '^name = "star"' "$ETC/node.toml"
}

@test "a joining node takes the fleet's secrets and makes only its own" {
  lead >/dev/null 2>&1
  local lead_fleet=$T/lead-fleet.env lead_node=$T/lead-node.env
  cp "$PREFIX/state/secrets/fleet.env" "$lead_fleet"
  cp "$PREFIX/state/secrets/node.env" "$lead_node"
  rm -rf "$T/opt" "$T/etc" "$T/usr"
  # shellcheck disable=SC2046
  run bash "$REPO/bootstrap/bootstrap.sh" $(install_args) --name star --role backup --fleet-env "$lead_fleet" \
    --members "aurora lead 10.0.0.1,star backup 10.0.0.2"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  cmp "$lead_fleet" "$PREFIX/state/secrets/fleet.env"
  [ "$(value REDIS_PASSWORD "$PREFIX/state/secrets/node.env")" != "$(value REDIS_PASSWORD "$lead_node")" ]
  grep -qx "AURORA_VPN_IP=10.0.0.2" "$PREFIX/state/node.env"
  grep -q '^dns_sync = "http://127.0.0.1:' "$ETC/node.toml"
}

@test "--rotate-credentials replaces this node's secrets, keeps the fleet's, and names what restarts" {
  lead >/dev/null 2>&1
  local fleet node
  fleet=$(cat "$PREFIX/state/secrets/fleet.env"); node=$(cat "$PREFIX/state/secrets/node.env")
  run lead --rotate-credentials
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(cat "$PREFIX/state/secrets/fleet.env")" = "$fleet" ]
  [ "$(value REDIS_PASSWORD "$PREFIX/state/secrets/node.env")" != "$(value REDIS_PASSWORD <(echo "$node"))" ]
  [ "$(value REDIS_PASSWORD "$PREFIX/.credentials")" = "$(value REDIS_PASSWORD "$PREFIX/state/secrets/node.env")" ]
  local line
  line=$(printf '%s\n' "$output" | grep '^new secrets for: ')
  [[ "$line" == *" redis "* ]] && [[ "$line" == *" grafana "* ]] || { echo "$line"; false; }
  [[ "$line" != *"repl-manager"* ]] || { echo "$line"; false; }
  grep -q "exec -T grafana grafana cli admin reset-admin-password" "$DOCKER_LOG"
}

@test "uninstall keeps the data unless --purge, and removes what was installed outside the prefix" {
  lead >/dev/null 2>&1
  # The installed copy, as the runbook runs it.
  run "$PREFIX/bootstrap/uninstall.sh" --prefix "$PREFIX"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ ! -e "$BIN/aurora-cli" ] && [ ! -e "$ETC/node.toml" ] && [ ! -e "$PREFIX/compose" ] && [ ! -e "$PREFIX/bootstrap" ]
  # Our config directory goes; the bin directory, a system one, stays even
  # when empty.
  [ ! -e "$ETC" ] && [ -d "$BIN" ]
  [ -s "$PREFIX/state/secrets/fleet.env" ]
  grep -qx "compose --env-file $PREFIX/state/node.env down --remove-orphans" "$DOCKER_LOG"
  # Containers outside the node's profiles go too; volumes stay.
  grep -qx "ps -aq --filter label=com.docker.compose.project=aurora-aurora" "$DOCKER_LOG"
  grep -qx "rm -f c0ffee" "$DOCKER_LOG"
  ! grep -q "^volume rm" "$DOCKER_LOG"
  # A reinstall keeps the kept secrets.
  local token
  token=$(value ADMIN_TOKEN "$PREFIX/state/secrets/fleet.env")
  lead >/dev/null 2>&1
  [ "$(value ADMIN_TOKEN "$PREFIX/state/secrets/fleet.env")" = "$token" ]
  run bash "$REPO/bootstrap/uninstall.sh" --prefix "$PREFIX" --purge --yes
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ ! -e "$PREFIX" ]
  grep -qx "compose --env-file $PREFIX/state/node.env down --remove-orphans --volumes" "$DOCKER_LOG"
  grep -qx "volume rm aurora-aurora_pgdata" "$DOCKER_LOG"
  run bash "$REPO/bootstrap/uninstall.sh" --prefix "$PREFIX"
  [ "$status" -eq 1 ]
  [[ "$output" == *"nothing installed under $PREFIX"* ]]
}

@test "without Docker, --skip-install refuses clearly; otherwise Docker's apt repository is used" {
  rm "$T/stub/docker"
  # A PATH with everything but docker.
  mkdir -p "$T/nodocker"
  for tool in bash sed grep awk cat cp mkdir chmod chown od tr wc head tail sort cut stat find hostname uname id mktemp dirname date cksum diff mv ln install rm env wg printf readlink; do
    p=$(command -v "$tool") && ln -sf "$p" "$T/nodocker/$tool"
  done
  PATH=$T/nodocker run bash "$REPO/bootstrap/bootstrap.sh" $(install_args) --name aurora --role lead --skip-install
  [ "$status" -eq 1 ]
  [[ "$output" == *"Docker with Compose v2 is missing and --skip-install forbids installing it"* ]]
  [ ! -e "$T/opt" ]
  PATH=$T/nodocker run bash "$REPO/bootstrap/bootstrap.sh" $(install_args) --name aurora --role lead --dry-run
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"[dry-run] as_root install -m 0755 -d /etc/apt/keyrings"* ]]
  [[ "$output" == *"download.docker.com/linux/"*" stable"* ]]
  [[ "$output" == *"apt-get install -y -qq docker-ce docker-ce-cli containerd.io docker-compose-plugin"* ]]
  [ ! -e "$T/opt" ]
}

@test "an unsupported system is refused before anything is done" {
  printf '#!/bin/sh\n[ "$1" = -m ] && echo x86_64 || echo %s\n' FreeBSD > "$T/stub/uname"
  chmod +x "$T/stub/uname"
  run lead
  [ "$status" -eq 1 ]
  [[ "$output" == *"unsupported system FreeBSD"* ]]
  printf '#!/bin/sh\n[ "$1" = -m ] && echo riscv64 || echo Linux\n' > "$T/stub/uname"
  run lead
  [[ "$output" == *"unsupported architecture riscv64"* ]]
  [ ! -e "$T/opt" ]
  [ ! -s "$DOCKER_LOG" ]
}

@test "a release archive installs like a directory and leaves no temporary files" {
  tar -czf "$T/release.tar.gz" -C "$T" bundle
  mkdir -p "$T/tmpdir"
  # shellcheck disable=SC2046
  TMPDIR=$T/tmpdir run bash "$REPO/bootstrap/bootstrap.sh" $(install_args | sed "s|$T/bundle|$T/release.tar.gz|") \
    --name aurora --role lead
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ -x "$PREFIX/bin/aurora-cli" ] && [ -f "$PREFIX/compose/compose.yaml" ]
  [ -z "$(ls -A "$T/tmpdir")" ] || { ls -la "$T/tmpdir"; false; }
  # A damaged archive is refused, naming it, before anything is written.
  rm -rf "$T/opt" "$T/etc" "$T/usr"
  head -c 100 "$T/release.tar.gz" > "$T/broken.tar.gz"
  # shellcheck disable=SC2046
  run bash "$REPO/bootstrap/bootstrap.sh" $(install_args | sed "s|$T/bundle|$T/broken.tar.gz|") --name aurora --role lead
  [ "$status" -eq 1 ]
  [[ "$output" == *"the release archive $T/broken.tar.gz is damaged"* ]]
  [ ! -e "$T/opt" ]
}

# The release archive as the pipeline makes it, served over HTTP on
# loopback, installed the way the README says: the script piped into bash.
@test "curl | bash installs the release archive the pipeline makes, checked against its sha256, with its images" {
  run "$REPO/scripts/release-archive.sh" --cli "$BATS_AURORA_CLI" --image-prefix example.invalid/aurora-node \
    --tag 0123abc --out "$T/www/v0.1.0"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  local archive=${lines[-1]}
  [ -s "$archive" ] && [ -s "$archive.sha256" ]
  # What is in it: one directory, the stack, the installer, the tool, the images.
  tar -tzf "$archive" | grep -qx 'aurora-node-0.1.0/compose/compose.yaml'
  tar -tzf "$archive" | grep -qx 'aurora-node-0.1.0/bootstrap/uninstall.sh'
  tar -tzf "$archive" | grep -qx 'aurora-node-0.1.0/bin/aurora-cli'
  ! tar -tzf "$archive" | grep -v '^aurora-node-0.1.0/'
  # Made twice from the same inputs, it is the same archive.
  "$REPO/scripts/release-archive.sh" --cli "$BATS_AURORA_CLI" --image-prefix example.invalid/aurora-node \
    --tag 0123abc --out "$T/again" >/dev/null
  cmp "$archive" "$T/again/$(basename "$archive")"

  # Its own output only: bats waits for every holder of its file
  # descriptors, and teardown stops it whatever the test's end.
  python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$T/www" > "$T/http.log" 2>&1 3>&- &
  local server=$! port=""
  echo "$server" > "$T/http.pid"
  for _ in $(seq 50); do
    port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$T/http.log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$T/http.log"; false; }
  export INSTALL_AURORA_RELEASE_BASE=http://127.0.0.1:$port
  local args=(--non-interactive --prefix "$PREFIX" --etc-dir "$ETC" --bin-dir "$BIN" --name aurora --role lead)

  # A download that does not match its checksum installs nothing.
  cp "$archive.sha256" "$T/good.sha256"
  printf '%064d  %s\n' 0 "$(basename "$archive")" > "$archive.sha256"
  run bash -s -- "${args[@]}" < "$REPO/bootstrap/bootstrap.sh"
  [ "$status" -eq 1 ] || { echo "$output"; false; }
  [[ "$output" == *"does not match its checksum"*"nothing was installed"* ]]
  [ ! -e "$T/opt" ]
  ! grep -q ' up -d' "$DOCKER_LOG"
  # Nor does one whose checksum cannot be had.
  rm "$archive.sha256"
  run bash -s -- "${args[@]}" < "$REPO/bootstrap/bootstrap.sh"
  [ "$status" -eq 1 ]
  [[ "$output" == *"cannot download the release's checksum"* ]]
  [ ! -e "$T/opt" ]

  cp "$T/good.sha256" "$archive.sha256"
  run bash -s -- "${args[@]}" < "$REPO/bootstrap/bootstrap.sh"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ -x "$PREFIX/bin/aurora-cli" ] && [ -x "$PREFIX/bootstrap/bootstrap.sh" ]
  # The node runs the release's own images, and a rerun keeps them.
  grep -qx 'AURORA_IMAGE_REPL_MANAGER=example.invalid/aurora-node/repl-manager:0123abc' "$PREFIX/state/node.env"
  grep -qx 'AURORA_IMAGE_WIREGUARD=example.invalid/aurora-node/wireguard:0123abc' "$PREFIX/state/node.env"
  local before; before=$(snapshot)
  run bash "$PREFIX/bootstrap/bootstrap.sh" --non-interactive --prefix "$PREFIX" --etc-dir "$ETC" --bin-dir "$BIN"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(snapshot)" = "$before" ]
  run bash "$REPO/bootstrap/uninstall.sh" --prefix "$PREFIX" --yes
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ ! -e "$PREFIX/images.env" ]
}

@test "a rerun with no answers keeps the install's: members, ports and images survive a bare --rotate-credentials" {
  printf 'AURORA_IMAGE_ASSET_SYNC=aurora-local/asset-sync:test\n' > "$T/images.env"
  run lead --members "aurora lead 10.0.0.1,star backup 10.0.0.2" --set AURORA_PORT_POSTGRES=15432 \
    --image-env "$T/images.env"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  local env_before repl_before redis_before
  env_before=$(cat "$PREFIX/state/node.env")
  repl_before=$(cat "$PREFIX/state/config/repl-manager.toml")
  redis_before=$(value REDIS_PASSWORD "$PREFIX/state/secrets/node.env")
  grep -q "star" "$PREFIX/state/config/repl-manager.toml"
  # Nothing but where it is installed, and what to do.
  run bash "$REPO/bootstrap/bootstrap.sh" --non-interactive --prefix "$PREFIX" --etc-dir "$ETC" \
    --bin-dir "$BIN" --bundle "$T/bundle" --rotate-credentials
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(cat "$PREFIX/state/node.env")" = "$env_before" ] || diff <(echo "$env_before") "$PREFIX/state/node.env"
  [ "$(cat "$PREFIX/state/config/repl-manager.toml")" = "$repl_before" ]
  grep -qx "AURORA_PORT_POSTGRES=15432" "$PREFIX/state/node.env"
  grep -qx "AURORA_IMAGE_ASSET_SYNC=aurora-local/asset-sync:test" "$PREFIX/state/node.env"
  [ "$(value REDIS_PASSWORD "$PREFIX/state/secrets/node.env")" != "$redis_before" ]
  # An answer given again wins over the kept one.
  run bash "$REPO/bootstrap/bootstrap.sh" --non-interactive --prefix "$PREFIX" --etc-dir "$ETC" \
    --bin-dir "$BIN" --bundle "$T/bundle" --members "aurora lead 10.0.0.1"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  ! grep -q "star" "$PREFIX/state/config/repl-manager.toml"
}
