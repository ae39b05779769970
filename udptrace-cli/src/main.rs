//! `udptrace`: trace every UDP send, receive, connect and close on this host.

mod count;
mod dns;
mod docs;
mod doctor;
mod latency;
mod life;
mod output;
mod parse;
mod quic;
mod rcvbuf;
mod serve;
mod sink;
mod sockets;
mod top;
mod trace;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ColorChoice, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "udptrace",
    version = env!("UDPTRACE_VERSION"),
    about = "Trace every UDP send, receive, connect, close, datagram and drop on this host, with eBPF",
    long_about = "Trace every UDP send, receive, connect, close, datagram and drop on this host, \
        with eBPF.\n\n\
        Without a subcommand, `udptrace` runs `trace`. Needs root, or CAP_BPF, CAP_PERFMON \
        and CAP_NET_ADMIN (or CAP_SYS_ADMIN, which the kernel accepts for each).\n\n\
        Text output shows task names with control characters and bytes that are not UTF-8 \
        escaped (\\xNN), since processes choose their own names.\n\n\
        Exit status: 0 when the run ended as asked (or its reader went away), 1 on a runtime \
        error (privileges, kernel support, output that cannot be written), 2 on a usage error.",
    after_help = "Examples:\n  \
        udptrace                          # every UDP socket event, one line each\n  \
        udptrace --port 53 --json         # DNS traffic as NDJSON\n  \
        udptrace -p 1234 -d 10            # one process, for ten seconds\n  \
        udptrace --addr 10.0.0.0/8 -4     # IPv4 sockets talking to 10/8\n  \
        udptrace trace --packets          # each datagram, as DTrace's udp script prints it\n  \
        udptrace count --by dport -e packet-send   # datagrams sent, by destination port\n  \
        udptrace drops                    # datagrams the kernel discarded, and why",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    trace: trace::TraceArgs,
    /// When to colour help and usage errors (udptrace's own output has none):
    /// auto (on a terminal, unless NO_COLOR is set), always or never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: ColorChoice,
}

#[derive(Subcommand)]
enum Command {
    /// Print one line per UDP socket event (the default), or per datagram with --packets
    Trace(trace::TraceArgs),
    /// Print each UDP datagram the kernel discards, with the reason (receive
    /// buffer full, no socket on the port, bad checksum, ...) and its owner
    Drops(trace::DropsArgs),
    /// Count events in the kernel by keys (ports, addresses, process, event,
    /// drop reason, cgroup, netns, errno) and print a sorted table on exit or
    /// every --interval
    #[command(after_help = "Examples:\n  \
        udptrace count --by dport -e packet-send     # datagrams sent, by destination port\n  \
        udptrace count --by comm,event -i 5 --top 10 # busiest processes, every 5 s\n  \
        udptrace count --by reason,dport -e drop     # drops by reason and port")]
    Count(count::CountArgs),
    /// Show how long received datagrams waited in their socket's receive
    /// queue (or, with --size, how large datagrams are), as histograms by
    /// keys, added up in the kernel
    #[command(
        long_about = "Show how long received datagrams waited in their socket's receive queue, \
            from the moment UDP queued each one to the receive that took it off, as \
            power-of-two histograms in microseconds (as bcc's runqlat prints them) with the \
            count, mean, p50, p90, p99 and maximum; with --size, the datagrams' sizes in bytes, \
            as DTrace's quantize. Added up in the kernel, split by --by keys, printed on exit or \
            every --interval. A peek is not a receive; a datagram dropped or left queued at \
            close waited for nobody and is not counted (drops and rcvbuf count those). \
            Datagrams queued before tracing began have no known wait: counted apart in the \
            summary.",
        after_help = "Examples:\n  \
        udptrace latency                          # one histogram of every receive's wait\n  \
        udptrace latency --by comm,dport -i 5     # by process and port, every 5 s\n  \
        udptrace latency --port 53 --json         # a DNS server's waits, as JSON\n  \
        udptrace latency --size --by comm         # sizes of datagrams received, by process"
    )]
    Latency(latency::LatencyArgs),
    /// Show UDP traffic and drops by process (or by count keys, or socket),
    /// live, counted in the kernel: the first screen to open
    #[command(
        long_about = "Show UDP traffic and drops by process (or by count keys, or by socket), \
            refreshed every --interval, counted in the kernel (no event crosses to user \
            space). Columns: datagrams and bytes per second received and sent, drops per \
            second and the reason of most of them; by socket, also the receive queue's \
            peak as a share of its buffer (RCVQ%).\n\n\
            On a terminal: a live screen; keys: s or the right arrow sorts by the next column \
            (the left arrow, the previous one), \
            r reverses, p or space pauses, q quits. Otherwise, or with --batch: a plain \
            table per interval, of counts (not rates), as top -b; --json: one object per \
            interval.",
        after_help = "Examples:\n  \
            udptrace top                       # by process, every second\n  \
            udptrace top --by dport -i 5       # by destination port, every 5 s\n  \
            udptrace top --by socket           # by socket, with receive-queue peaks\n  \
            udptrace top -b -d 10 --json       # ten JSON samples, for a script"
    )]
    Top(top::TopArgs),
    /// Print one line per UDP socket as it closes: its process, ends,
    /// datagrams and bytes each way, drops and lifetime (tcplife for UDP)
    #[command(
        long_about = "Print one line per UDP socket as it closes: its process, local and \
            remote ends, datagrams and bytes sent and received, drops and lifetime \
            (tcplife for UDP).\n\n\
            REMOTE is the peer a connected socket was connected to; for an unconnected \
            socket, marked `*`, the peer of most of its datagrams (exact whenever one \
            peer had more than half of them). MS is the lifetime in milliseconds from \
            the socket's creation, or, marked `>`, from when tracing first saw it (it \
            existed before). Traffic and drops count from when tracing began. PID and \
            COMM are of the task that closed the socket; --open lists the sockets \
            still open on exit, by their owner.",
        after_help = "Examples:\n  \
            udptrace life                      # every UDP socket as it closes\n  \
            udptrace life --port 53 --json     # DNS clients' sockets, as NDJSON\n  \
            udptrace life -d 10 --open         # ten seconds, then the sockets still open"
    )]
    Life(life::LifeArgs),
    /// List the receiving UDP sockets closest to (or over) their receive
    /// buffer: its size, the peak queued, drops, and the size that would fit
    #[command(
        long_about = "List the receiving UDP sockets closest to (or over) their receive \
            buffer, on exit or every --interval: the buffer (SO_RCVBUF as the kernel \
            holds it, twice what setsockopt was given), the most bytes queued with a \
            datagram just queued (PEAK, in truesize: what the buffer counts), how full \
            that is with the datagrams it refused (FILL%, over 100 when it overflowed), \
            the datagrams refused (DROPS, the kernel's RcvbufErrors for that socket) \
            and SUGGESTED: a buffer that would have held the fullest burst, everything \
            it queued and refused (a burst lasts until the queue is next seen empty). \
            To apply it, give setsockopt(SO_RCVBUF) half of it, and raise \
            net.core.rmem_max to at least that half if it is lower.",
        after_help = "Examples:\n  \
            udptrace rcvbuf -d 30              # who ran closest to the limit in 30 s\n  \
            udptrace rcvbuf -i 5 --top 10      # the ten fullest, every 5 s\n  \
            udptrace rcvbuf --port 514 --json  # a syslog receiver, as JSON"
    )]
    Rcvbuf(rcvbuf::RcvbufArgs),
    /// Serve Prometheus metrics: datagrams, bytes, drops by reason and
    /// errors by errno, counted in the kernel, labelled by process or pod
    #[command(
        long_about = "Serve Prometheus metrics on http://ADDR:PORT/metrics (text format 0.0.4, \
            or OpenMetrics when the scraper asks for it): udptrace_datagrams_total and \
            udptrace_bytes_total (label direction: send or recv), udptrace_drops_total \
            (label reason, as drop events name it), udptrace_errors_total (failed sends \
            and receives, labels direction and errno), udptrace_lost_events_total, \
            udptrace_kernel_table_full_events_total, udptrace_series_overflow_events_total, \
            udptrace_series and udptrace_build_info (version, backend).\n\n\
            Events are counted in the kernel, by the --by labels, and read at each scrape \
            (and every second between scrapes, so that the kernel's table does not fill): \
            no event crosses to user space. Counters are cumulative from the start and \
            never go backwards; a series whose process or socket went away keeps its \
            last value. At most --max-series label sets are kept; the datagrams of \
            newer ones count in one series labelled overflow=\"true\", and \
            udptrace_series_overflow_events_total says how many.\n\n\
            container_id, pod_uid and cgroup_path come from the task's cgroup (Docker, \
            containerd, CRI-O and Podman layouts; empty where the cgroup shows none). \
            / answers with a page that links /metrics; other paths get 404.",
        after_help = "Examples:\n  \
            udptrace serve                                  # by process, on port 10050\n  \
            udptrace serve --by pod_uid,container_id        # by Kubernetes pod and container\n  \
            udptrace serve --listen 127.0.0.1:10050 --by comm,dport --port 53"
    )]
    Serve(serve::ServeArgs),
    /// Print one line per DNS transaction over UDP: process, server, query,
    /// answer and latency, and every query left unanswered
    #[command(
        long_about = "Print one line per DNS transaction over UDP, decoded from the datagrams \
            themselves: the process, its role (client, or server answering), the server's \
            address, the query's id, type and name, the response code (with TC when the \
            answer was truncated and the client should retry over TCP), the number of \
            answers, and the latency: from the query leaving the client to the response \
            reaching it, or, on a server, from the query's arrival to the response leaving. \
            A query is matched with its response on the same socket by id and peer (a retry \
            with the same id waits on, timed from the first send); one unanswered after \
            --timeout is printed with `timeout`, one still waiting when tracing ends with \
            `waiting`.\n\n\
            The first 512 bytes of each datagram on the DNS port are captured, which holds \
            a message's header and question. Datagrams on the port that are not DNS are \
            counted (`not DNS` in the summary), never fatal. Clients and servers on this \
            host, IPv4 and IPv6, connected or not; a lookup between two local processes \
            shows once as the client's and once as the server's.",
        after_help = "Examples:\n  \
            udptrace dns                       # every lookup on port 53\n  \
            udptrace dns --timeout 1 -c nginx  # nginx's lookups, unanswered after 1 s\n  \
            udptrace dns --port 5300 --json    # a resolver on port 5300, as NDJSON"
    )]
    Dns(dns::DnsArgs),
    /// Print one line per QUIC long-header packet: process, version,
    /// connection ids, type, and the server name of each client Initial
    #[command(
        long_about = "Print one line per QUIC long-header packet (Initial, 0-RTT, Handshake, \
            Retry, and Version Negotiation) on the QUIC port: the process, the datagram's \
            ends, the version (0x00000001 for QUIC v1, 0x6b3343cf for v2), the packet type, \
            the destination and source connection ids, and for a client's Initial packet the \
            server name (SNI) its TLS ClientHello asks for, read by removing the Initial \
            packet protection as RFC 9001 section 5 defines. Short-header (1-RTT) packets \
            carry no connection id a passive observer can interpret and are only counted.\n\n\
            On loopback each datagram is seen twice: as it leaves (packet-send, the sending \
            task) and as it reaches its socket (packet-recv, the socket's owner). A \
            ClientHello spread over several Initial packets shows its server name only if \
            the first holds it.",
        after_help = "Examples:\n  \
            udptrace quic                      # QUIC handshakes on port 443\n  \
            udptrace quic --port 4433 --json   # a test server's, as NDJSON\n  \
            udptrace quic -c chrome            # which servers chrome opens connections to"
    )]
    Quic(quic::QuicArgs),
    /// Show what this kernel supports: BTF, cgroup v2, privileges, and each
    /// backend (really attached, then detached) with its probes
    Doctor,
    /// Print the completion script for a shell
    #[command(after_help = "Examples:\n  \
        udptrace completions bash > /etc/bash_completion.d/udptrace\n  \
        udptrace completions zsh > /usr/local/share/zsh/site-functions/_udptrace\n  \
        udptrace completions fish > /etc/fish/completions/udptrace.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (udptrace.1, and udptrace-SUBCOMMAND.1 for each
    /// subcommand) into a directory
    #[command(hide = true)]
    ManPages { dir: std::path::PathBuf },
}

impl Cli {
    /// Usage errors the option parsers cannot see alone, with the
    /// subcommand they concern.
    fn check(&self) -> Result<(), (&'static str, String)> {
        match &self.command {
            Some(Command::Count(args)) => args.check().map_err(|msg| ("count", msg)),
            Some(Command::Latency(args)) => args.check().map_err(|msg| ("latency", msg)),
            Some(Command::Top(args)) => args.check().map_err(|msg| ("top", msg)),
            Some(Command::Serve(args)) => args.check().map_err(|msg| ("serve", msg)),
            _ => Ok(()),
        }
    }
}

/// `--color`, read before clap parses the rest: clap colours its own help
/// and errors by it. A bad value is left for clap to report.
fn color_choice(args: impl IntoIterator<Item = std::ffi::OsString>) -> ColorChoice {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let value = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--" => Some(None),
        "--color" => Some(args.get(i + 1).cloned()),
        _ => a.strip_prefix("--color=").map(|v| Some(v.to_string())),
    });
    value
        .flatten()
        .and_then(|v| ColorChoice::from_str(&v, false).ok())
        .unwrap_or(ColorChoice::Auto)
}

/// The command line's definition, colouring as `--color` says.
fn cli_command() -> clap::Command {
    Cli::command().color(color_choice(std::env::args_os()))
}

/// Exits as clap does for a bad option (status 2), with the subcommand's usage.
fn usage_error(subcommand: &str, msg: String) -> ! {
    let mut cli = cli_command();
    cli.build();
    let cmd = cli
        .find_subcommand_mut(subcommand)
        .expect("a known subcommand");
    cmd.error(ErrorKind::ArgumentConflict, msg).exit()
}

/// 0: done; 1: a runtime error; 2 (clap's): a usage error.
fn main() -> ExitCode {
    let matches = cli_command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err((subcommand, msg)) = cli.check() {
        usage_error(subcommand, msg);
    }
    let result = match cli.command {
        Some(Command::Trace(args)) => trace::run(args),
        Some(Command::Drops(args)) => trace::run_drops(args),
        Some(Command::Count(args)) => count::run(args),
        Some(Command::Latency(args)) => latency::run(args),
        Some(Command::Top(args)) => top::run(args),
        Some(Command::Life(args)) => life::run(args),
        Some(Command::Rcvbuf(args)) => rcvbuf::run(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Dns(args)) => dns::run(args),
        Some(Command::Quic(args)) => quic::run(args),
        Some(Command::Doctor) => doctor::run(),
        Some(Command::Completions { shell }) => docs::completions(shell),
        Some(Command::ManPages { dir }) => docs::man_pages(&dir),
        None => trace::run(cli.trace),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udptrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    const FLAGS: &[&str] = &[
        "trace",
        "drops",
        "count",
        "life",
        "rcvbuf",
        "top",
        "serve",
        "--listen",
        "--max-series",
        "--cgroup",
        "--container",
        "--netns",
        "--wide",
        "-b",
        "--batch",
        "doctor",
        "-p",
        "--pid",
        "-c",
        "--comm",
        "--port",
        "--addr",
        "-4",
        "-6",
        "-d",
        "--duration",
        "--backend",
        "-v",
        "--json",
        "-e",
        "--events",
        "--packets",
        "--show-eagain",
        "--by",
        "-i",
        "--interval",
        "--top",
        "--open",
        "--color",
    ];

    /// Command lines of known flags and arbitrary values.
    fn argv() -> impl Strategy<Value = Vec<String>> {
        let word = prop_oneof![
            select(FLAGS).prop_map(String::from),
            "\\PC{0,12}",
            "-?[0-9]{0,20}(\\.[0-9]{0,3})?(e[0-9]{1,3})?",
        ];
        proptest::collection::vec(word, 0..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_command_line_parses_or_is_a_usage_error(args in argv()) {
            let argv = std::iter::once("udptrace".to_string()).chain(args);
            match Cli::try_parse_from(argv) {
                Ok(cli) => {
                    let _ = cli.check();
                }
                Err(e) => prop_assert!(e.exit_code() == 2 || e.exit_code() == 0, "{}", e),
            }
        }
    }
}
