#!/usr/bin/env bats
# scripts/deploy-fleet.sh, the pipeline's rolling deploy, against a stand-in
# ssh that logs where it was sent and what it was asked to run.

setup() {
  REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  T=$BATS_TEST_TMPDIR
  export SSH_LOG=$T/ssh.log FAIL_ON=""
  : > "$SSH_LOG"
  mkdir -p "$T/stub"
  cat > "$T/stub/ssh" <<'STUB'
#!/usr/bin/env bash
host=""
for a in "$@"; do case "$a" in *@*) host=$a ;; esac; done
printf '%s %s\n' "$host" "${!#}" >> "$SSH_LOG"
[ -z "$FAIL_ON" ] || [ "$host" != "root@$FAIL_ON" ] || exit 1
STUB
  chmod +x "$T/stub/ssh"
  export PATH="$T/stub:$PATH"
  printf '%s\n' "# the fleet" "aurora lead 10.0.0.1" "star backup 10.0.0.2" \
    "vengeance compute 10.0.0.3" "" "iceland compute 10.0.0.4  # GPU" > "$T/nodes"
}

deploy() { bash "$REPO/scripts/deploy-fleet.sh" --nodes "$T/nodes" --image-prefix aurora-node --tag abc123 "$@"; }

@test "compute nodes first, then the backup, the lead last; dns-sync only where it runs" {
  run deploy
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(cut -d' ' -f1 "$SSH_LOG" | tr '\n' ' ')" = "root@10.0.0.3 root@10.0.0.4 root@10.0.0.2 root@10.0.0.1 " ]
  grep -q "^root@10.0.0.3 .*aurora-cli update repl-manager --image aurora-node/repl-manager:abc123" "$SSH_LOG"
  ! grep -q "^root@10.0.0.3 .*dns-sync" "$SSH_LOG"
  grep -q "^root@10.0.0.1 .*aurora-cli update dns-sync --image aurora-node/dns-sync:abc123; aurora-cli status" "$SSH_LOG"
}

@test "a failing node stops the rollout before the lead" {
  FAIL_ON=10.0.0.2 run deploy
  [ "$status" -eq 1 ]
  [[ "$output" == *"star failed"* ]]
  ! grep -q "^root@10.0.0.1 " "$SSH_LOG"
}

@test "target and role pick the nodes" {
  run deploy --target iceland
  [ "$status" -eq 0 ]
  [ "$(wc -l < "$SSH_LOG")" -eq 1 ] && grep -q "^root@10.0.0.4 " "$SSH_LOG"
  : > "$SSH_LOG"
  run deploy --role backup
  [ "$(cut -d' ' -f1 "$SSH_LOG")" = "root@10.0.0.2" ]
  run deploy --target nowhere
  [ "$status" -eq 1 ] && [[ "$output" == *"no node in"*"matches --target nowhere"* ]]
}

@test "bad inputs exit 2 naming what was wrong, before any ssh" {
  : > "$SSH_LOG"
  run deploy --tag 'a b'
  [ "$status" -eq 2 ] && [[ "$output" == *"--tag: 'a b' is not an image tag"* ]]
  run deploy --role primary
  [ "$status" -eq 2 ] && [[ "$output" == *"--role: 'primary'"* ]]
  echo "broken line" >> "$T/nodes"
  run deploy
  [ "$status" -eq 2 ] && [[ "$output" == *"line 7: 'broken line' is not 'name role vpn_ip'"* ]]
  [ ! -s "$SSH_LOG" ]
}
