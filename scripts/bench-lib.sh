# Shared helpers for scripts/bench-*.sh (sourced, not run).

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

wait_ready() {
  for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not start" >&2; exit 1
}

# measure NAME CMD...: runs CMD under GNU time; appends "NAME wall cpu rss_kb" to $results.
measure() {
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$tf" "$@"
  read -r wall user sys rss <"$tf"; rm -f "$tf"
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
  echo "$name $wall $cpu $rss" >>"$results"
  printf '%-34s wall %7.2fs  cpu %7.2fs  peak RSS %7.1f MB\n' "$name" "$wall" "$cpu" "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
}

# ratio A B FIELD(2=wall,3=cpu,4=rss): prints A/B for that field.
ratio() {
  awk -v a="$1" -v b="$2" -v f="$3" '$1==a{x=$f} $1==b{y=$f} END{ if (y>0) printf "%.2f", x/y; else print "n/a" }' "$results"
}
