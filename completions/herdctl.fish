# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_herdctl_global_optspecs
    string join \n config= h/help V/version
end

function __fish_herdctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_herdctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_herdctl_using_subcommand
    set -l cmd (__fish_herdctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c herdctl -n "__fish_herdctl_needs_command" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c herdctl -n "__fish_herdctl_needs_command" -s V -l version -d 'Print version'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "start" -d 'Start servers under the supervisor (starting it if needed) and wait until they answer'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "stop" -d 'Stop servers: SIGTERM, then SIGKILL after the stop timeout. `stop all` also ends the supervisor'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "restart" -d 'Stop, then start servers'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "kill" -d 'SIGKILL a server, as a crash: the supervisor restarts it by its restart policy'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "pause" -d 'Freeze a server (SIGSTOP) as a hung process would be: the supervisor does not restart it for its silence'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "resume" -d 'Let a paused server run again (SIGCONT); it catches up through its links'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "status" -d 'Show every server\'s state, pid, port, uptime, restarts, clients and links'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "top" -d 'A live view of the whole herd from every server\'s admin endpoint: state, uptime, restarts, clients, requests/s by command, p99 latency, floods in/out per second, store health, log drops, links (missing neighbours named). Keys: s sorts by the next column, r reverses, arrows/PgUp/PgDn scroll, q quits. When standard output is not a terminal it prints a plain table every interval'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "verify" -d 'Ask every server for its table digest and say whether the herd agrees: exit 0 when it does, 1 when not (naming clients and who lacks their newest record), 2 when a server cannot be asked'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "link" -d 'Break a link on purpose, or mend it: the two servers apply the fault themselves (told over the control path, proved with the herd secret). A restart of either end also clears it'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "forget" -d 'Remove a client\'s location from the whole herd: a tombstone, flooded to every server (one that is down gets it when it comes back) and kept for clients.tombstone_ttl_s. A later IAMAT with a newer time brings the client back. Log lines already written are not rewritten (logs.redact keeps ids and locations out of them)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "chaos" -d 'A seeded run of IAMAT load and random faults, healed at the end, then checked: every acknowledged update on every server, how long convergence took, stale reads, flood lines per update. Exit 1 when anything acknowledged was lost or the herd did not converge'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "send" -d 'Send one line (or lines from stdin with `-`) to a server and print its reply'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "tail" -d 'Print the end of a server\'s log (`all`: every server\'s, interleaved by time)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "run" -d 'Run one server in the foreground (what the supervisor, systemd or a container runs). SIGHUP makes it re-read the herd file and apply it live'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "check" -d 'Validate the herd file and print the herd it describes'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "reload" -d 'Re-read the herd file and apply it to the running herd: start added servers, stop removed ones, restart those whose own settings changed, tell the rest live'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "probe" -d 'Exit 0 if the server\'s admin endpoint on this machine answers as that server, else 1 (a container\'s health check)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "export" -d 'Write the herd as another engine\'s configuration (systemd units, Kubernetes objects)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "certs" -d 'The herd\'s certificate authority and its servers\' certificates, for TLS links (`links.tls` in the herd file) and TLS clients (`tls_port`)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "bench" -d 'Load a running server and measure throughput, latency and propagation'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "supervise" -d 'The supervisor daemon itself (started by `herdctl start`; not for direct use)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "complete-names" -d '`all` and the herd\'s server names, one a line, for the shell completion scripts (nothing, and success, when the herd file cannot be read)'
complete -c herdctl -n "__fish_herdctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand start" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand start" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand stop" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand restart" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand restart" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand kill" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand kill" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand pause" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand pause" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand resume" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand resume" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand status" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand status" -l json -d 'Print a JSON list instead of a table'
complete -c herdctl -n "__fish_herdctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand top" -l interval -d 'Seconds between refreshes (rates are over this interval)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand top" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand top" -l once -d 'Print one plain table (two looks an interval apart, for the rates) and exit'
complete -c herdctl -n "__fish_herdctl_using_subcommand top" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand verify" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand verify" -l json -d 'Print one JSON object instead of text'
complete -c herdctl -n "__fish_herdctl_using_subcommand verify" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -f -a "cut" -d 'Cut the link: nothing passes either way until it is healed'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -f -a "heal" -d 'Clear the faults of the link between A and B, or of every link (`heal all`)'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -f -a "delay" -d 'Hold every line on the link, both ways, this many milliseconds'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -f -a "loss" -d 'Drop this share of the updates flooded on the link, both ways (anti-entropy repairs them)'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and not __fish_seen_subcommand_from cut heal delay loss help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from cut" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from cut" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from heal" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from heal" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from delay" -l jitter -d 'Vary each line\'s delay by up to this many milliseconds either way (lines stay in order)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from delay" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from delay" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from loss" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from loss" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from help" -f -a "cut" -d 'Cut the link: nothing passes either way until it is healed'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from help" -f -a "heal" -d 'Clear the faults of the link between A and B, or of every link (`heal all`)'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from help" -f -a "delay" -d 'Hold every line on the link, both ways, this many milliseconds'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from help" -f -a "loss" -d 'Drop this share of the updates flooded on the link, both ways (anti-entropy repairs them)'
complete -c herdctl -n "__fish_herdctl_using_subcommand link; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand forget" -l reason -d 'Why, for the log of the server that makes the tombstone (at most 200 bytes)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand forget" -l via -d 'The server to tell (default: the first that answers, by name)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand forget" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand forget" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l duration -d 'How long the load and the faults last, in seconds (the check follows)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l seed -d 'The seed the fault schedule follows: the same seed, the same schedule' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l rate -d 'IAMATs per second, spread over the servers' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l faults -d 'The fault kinds to draw from, comma-separated (empty: none)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -l json -d 'Print one JSON object instead of text'
complete -c herdctl -n "__fish_herdctl_using_subcommand chaos" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand send" -l timeout -d 'Seconds to wait for a reply (or for more of it) once everything is sent' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand send" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand send" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand tail" -s n -l lines -d 'How many lines to print' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand tail" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand tail" -s f -l follow -d 'Keep printing lines as they are written, across log rotation'
complete -c herdctl -n "__fish_herdctl_using_subcommand tail" -l raw -d 'Print lines as they are in the file: a multi-line reply stays one line, its newlines escaped as `\\n` (by default it is shown as the lines it was)'
complete -c herdctl -n "__fish_herdctl_using_subcommand tail" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand run" -l applied-copy -d 'Read the herd file\'s text from this copy (the supervisor\'s copy of the file it applied), as if it were the --config file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand run" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand run" -l log-stdout -d 'Also write every log line to standard output, where a container engine collects logs (the files under log_dir stay the complete record)'
complete -c herdctl -n "__fish_herdctl_using_subcommand run" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand check" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand check" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand reload" -l node -d 'Only this node, signalled directly with no supervisor (for systemd\'s ExecReload): the herd file is checked, the node sent SIGHUP, and the command waits until the node runs the new file' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand reload" -l pid -d 'The node\'s pid as its engine knows it (systemd\'s $MAINPID): refuse to signal if the node\'s lock says otherwise' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand reload" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand probe" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand probe" -l ready -d 'Ask whether it is ready to serve (`/readyz`: store loaded, listening) rather than alive (`/healthz`)'
complete -c herdctl -n "__fish_herdctl_using_subcommand probe" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -f -a "systemd" -d 'A `herd-<Name>.service` per server (running `herdctl run <Name>`) and a `herd.target` grouping them'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -f -a "compose" -d 'A Docker Compose project in DIR: compose.yaml (a service per server, on its own network, with a volume, restart policy and health check), the herd file the containers read, and herd.env (0600) with the herd secret'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -f -a "kubernetes" -d 'Kubernetes objects on standard output (or --out FILE): a ConfigMap with the herd file, a Secret with the herd secret, and per server a Service and a one-replica StatefulSet with a volume for its store'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -f -a "prometheus" -d 'A Prometheus scrape configuration on standard output: every server\'s admin endpoint (`/metrics`), labelled with its server name and host'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and not __fish_seen_subcommand_from systemd compose kubernetes prometheus help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from systemd" -l dir -d 'The folder to write the units into' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from systemd" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from systemd" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from compose" -l image -d 'The container image holding herdctl (see the README for how to build one)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from compose" -l dir -d 'The folder to write the project into' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from compose" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from compose" -l publish -d 'Also publish each server\'s client port on this machine\'s 127.0.0.1'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from compose" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from kubernetes" -l image -d 'The container image holding herdctl (see the README for how to build one)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from kubernetes" -l namespace -d 'The namespace to put every object in (default: kubectl\'s current one)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from kubernetes" -l out -d 'Write the objects to this file, readable by this user only (they hold the herd secret), instead of standard output' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from kubernetes" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from kubernetes" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from prometheus" -l token-file -d 'The file Prometheus reads the admin token from (`/metrics` needs it unless the herd file says `admin: { open: true }`)' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from prometheus" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from prometheus" -l write-token -d 'Write the admin token into --token-file (created 0600) first'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from prometheus" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from help" -f -a "systemd" -d 'A `herd-<Name>.service` per server (running `herdctl run <Name>`) and a `herd.target` grouping them'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from help" -f -a "compose" -d 'A Docker Compose project in DIR: compose.yaml (a service per server, on its own network, with a volume, restart policy and health check), the herd file the containers read, and herd.env (0600) with the herd secret'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from help" -f -a "kubernetes" -d 'Kubernetes objects on standard output (or --out FILE): a ConfigMap with the herd file, a Secret with the herd secret, and per server a Service and a one-replica StatefulSet with a volume for its store'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from help" -f -a "prometheus" -d 'A Prometheus scrape configuration on standard output: every server\'s admin endpoint (`/metrics`), labelled with its server name and host'
complete -c herdctl -n "__fish_herdctl_using_subcommand export; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -f -a "init" -d 'Create a herd CA (ca.pem, ca.key) and a certificate and key for every server of the herd file (<Name>.pem, <Name>.key: the server\'s name as its identity, its host as a subject alternative name)'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -f -a "issue" -d 'Issue (or renew) the certificate of one server, signed by the folder\'s CA'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -f -a "show" -d 'Show every certificate of the folder: whose it is, when it expires, who signed it'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and not __fish_seen_subcommand_from init issue show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from init" -l dir -d 'The folder (default: certs beside the herd file)' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from init" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from issue" -l dir -d 'The folder (default: certs beside the herd file)' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from issue" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from issue" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from show" -l dir -d 'The folder (default: certs beside the herd file)' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from show" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from help" -f -a "init" -d 'Create a herd CA (ca.pem, ca.key) and a certificate and key for every server of the herd file (<Name>.pem, <Name>.key: the server\'s name as its identity, its host as a subject alternative name)'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from help" -f -a "issue" -d 'Issue (or renew) the certificate of one server, signed by the folder\'s CA'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show every certificate of the folder: whose it is, when it expires, who signed it'
complete -c herdctl -n "__fish_herdctl_using_subcommand certs; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand completions" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l target -d 'The server to load (a name from the herd file; it must be running)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l forwarding -d 'With --herd: the herd\'s `links.forwarding` (flood or tree; default: the herd file\'s default)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l rounds -d 'With --herd: run the whole comparison this many times (fresh nodes each round, the lone node and the herd in turn) and report each round and the ratio\'s median and range: on a shared machine one round\'s ratio can be off by a tenth' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l duration -d 'How long to load it, in seconds' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l connections -d 'Connections (default: 50 in the closed loop, 8 with --rate)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l rate -d 'Open loop: send this many requests per second in all, whatever the replies do (latency counts from when each request was due). Without it: closed loop' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l window -d 'Requests in flight per connection in the closed loop (pipelining)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l ids -d 'Distinct client ids the IAMATs cycle through (fewer ids: more updates per client, which a node coalesces; more: closer to a herd of many clients)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l id-prefix -d 'Client ids are this text and a number. By default a new prefix per run, so every run reports new clients; give the same one to make runs update the same clients (to compare runs against one node at the same table size)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l mix -d 'The share of each command, e.g. `iamat=90,whatsat=10`' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l radius -d 'WHATSAT radius in km' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l bound -d 'WHATSAT bound (most places per reply)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l propagation -d 'Also measure how long an update acknowledged by the target takes to be visible at this server (a separate probe, ten updates per second)' -r
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l herd -d 'Start a lone node and the five-server herd of issue 26 (Bailey-Bona, Bailey-Campbell, Bona-Clark, Bona-Campbell, Campbell-Jaquez, Clark-Jaquez) on free loopback ports, load each the same way (the herd at Bailey) and compare: updates/s, the ratio, latency, node CPU per update, flood lines and duplicates per update. No herd file needed'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l per-request -d 'A new TCP connection per request, like the classic test clients'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l baseline-echo -d 'First drive an in-process echo server the same way, and report the node\'s rate as a ratio to it'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l json -d 'Print one JSON object instead of a table'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -l plain -d 'Speak plain text on the client port even to a server with a `tls_port` (which is otherwise spoken to over TLS there, its certificate checked against the herd CA)'
complete -c herdctl -n "__fish_herdctl_using_subcommand bench" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand supervise" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand supervise" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand complete-names" -l config -d 'The herd file' -r -F
complete -c herdctl -n "__fish_herdctl_using_subcommand complete-names" -s h -l help -d 'Print help'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "start" -d 'Start servers under the supervisor (starting it if needed) and wait until they answer'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "stop" -d 'Stop servers: SIGTERM, then SIGKILL after the stop timeout. `stop all` also ends the supervisor'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "restart" -d 'Stop, then start servers'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "kill" -d 'SIGKILL a server, as a crash: the supervisor restarts it by its restart policy'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "pause" -d 'Freeze a server (SIGSTOP) as a hung process would be: the supervisor does not restart it for its silence'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "resume" -d 'Let a paused server run again (SIGCONT); it catches up through its links'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "status" -d 'Show every server\'s state, pid, port, uptime, restarts, clients and links'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "top" -d 'A live view of the whole herd from every server\'s admin endpoint: state, uptime, restarts, clients, requests/s by command, p99 latency, floods in/out per second, store health, log drops, links (missing neighbours named). Keys: s sorts by the next column, r reverses, arrows/PgUp/PgDn scroll, q quits. When standard output is not a terminal it prints a plain table every interval'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "verify" -d 'Ask every server for its table digest and say whether the herd agrees: exit 0 when it does, 1 when not (naming clients and who lacks their newest record), 2 when a server cannot be asked'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "link" -d 'Break a link on purpose, or mend it: the two servers apply the fault themselves (told over the control path, proved with the herd secret). A restart of either end also clears it'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "forget" -d 'Remove a client\'s location from the whole herd: a tombstone, flooded to every server (one that is down gets it when it comes back) and kept for clients.tombstone_ttl_s. A later IAMAT with a newer time brings the client back. Log lines already written are not rewritten (logs.redact keeps ids and locations out of them)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "chaos" -d 'A seeded run of IAMAT load and random faults, healed at the end, then checked: every acknowledged update on every server, how long convergence took, stale reads, flood lines per update. Exit 1 when anything acknowledged was lost or the herd did not converge'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "send" -d 'Send one line (or lines from stdin with `-`) to a server and print its reply'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "tail" -d 'Print the end of a server\'s log (`all`: every server\'s, interleaved by time)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "run" -d 'Run one server in the foreground (what the supervisor, systemd or a container runs). SIGHUP makes it re-read the herd file and apply it live'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "check" -d 'Validate the herd file and print the herd it describes'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "reload" -d 'Re-read the herd file and apply it to the running herd: start added servers, stop removed ones, restart those whose own settings changed, tell the rest live'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "probe" -d 'Exit 0 if the server\'s admin endpoint on this machine answers as that server, else 1 (a container\'s health check)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "export" -d 'Write the herd as another engine\'s configuration (systemd units, Kubernetes objects)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "certs" -d 'The herd\'s certificate authority and its servers\' certificates, for TLS links (`links.tls` in the herd file) and TLS clients (`tls_port`)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "completions" -d 'Print a shell completion script'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "bench" -d 'Load a running server and measure throughput, latency and propagation'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "supervise" -d 'The supervisor daemon itself (started by `herdctl start`; not for direct use)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "complete-names" -d '`all` and the herd\'s server names, one a line, for the shell completion scripts (nothing, and success, when the herd file cannot be read)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart kill pause resume status top verify link forget chaos send tail run check reload probe export certs completions bench supervise complete-names help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from link" -f -a "cut" -d 'Cut the link: nothing passes either way until it is healed'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from link" -f -a "heal" -d 'Clear the faults of the link between A and B, or of every link (`heal all`)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from link" -f -a "delay" -d 'Hold every line on the link, both ways, this many milliseconds'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from link" -f -a "loss" -d 'Drop this share of the updates flooded on the link, both ways (anti-entropy repairs them)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from export" -f -a "systemd" -d 'A `herd-<Name>.service` per server (running `herdctl run <Name>`) and a `herd.target` grouping them'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from export" -f -a "compose" -d 'A Docker Compose project in DIR: compose.yaml (a service per server, on its own network, with a volume, restart policy and health check), the herd file the containers read, and herd.env (0600) with the herd secret'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from export" -f -a "kubernetes" -d 'Kubernetes objects on standard output (or --out FILE): a ConfigMap with the herd file, a Secret with the herd secret, and per server a Service and a one-replica StatefulSet with a volume for its store'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from export" -f -a "prometheus" -d 'A Prometheus scrape configuration on standard output: every server\'s admin endpoint (`/metrics`), labelled with its server name and host'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from certs" -f -a "init" -d 'Create a herd CA (ca.pem, ca.key) and a certificate and key for every server of the herd file (<Name>.pem, <Name>.key: the server\'s name as its identity, its host as a subject alternative name)'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from certs" -f -a "issue" -d 'Issue (or renew) the certificate of one server, signed by the folder\'s CA'
complete -c herdctl -n "__fish_herdctl_using_subcommand help; and __fish_seen_subcommand_from certs" -f -a "show" -d 'Show every certificate of the folder: whose it is, when it expires, who signed it'

# Server names (from the herd file, by `herdctl complete-names`) where a command takes them.
complete -c herdctl -n "__fish_herdctl_using_subcommand start stop restart kill pause resume send tail" -f -a "(herdctl complete-names 2>/dev/null)"
