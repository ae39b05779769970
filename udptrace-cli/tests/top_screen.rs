//! `udptrace top` on a real terminal: tmux runs it beside two sender
//! processes at known rates, the test reads the screen with `capture-pane`
//! and presses its keys. Needs root and tmux
//! (host only: the kernel matrix's VMs have no tmux).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of this test's own, with one window of 160 x 30.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("udptrace-test-{}", std::process::id()),
        };
        tmux.run(&["new-session", "-d", "-x", "160", "-y", "30", command]);
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8(self.run(&["capture-pane", "-p"]).stdout).unwrap()
    }

    fn press(&self, key: &str) {
        self.run(&["send-keys", key]);
    }

    fn alive(&self) -> bool {
        self.run(&["has-session"]).status.success()
    }

    /// Waits until the screen shows what `ready` wants, and returns it.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "no {what} on screen:\n{screen}");
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// A process of its own, named `comm`, that sends `rate` datagrams a second
/// to `dst` until killed, paced by absolute deadlines so that its average
/// rate is exact whatever the delays.
fn paced_sender(comm: &str, rate: u32, dst: std::net::SocketAddr) -> Child {
    let script = format!(
        "import ctypes, socket, time\n\
         ctypes.CDLL(None).prctl(15, b'{comm}', 0, 0, 0)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         t = time.monotonic()\n\
         while True:\n\
         \x20   s.sendto(bytes(64), ('{ip}', {port}))\n\
         \x20   t += 1 / {rate}\n\
         \x20   time.sleep(max(0, t - time.monotonic()))\n",
        ip = dst.ip(),
        port = dst.port(),
    );
    Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .expect("python3 runs")
}

/// A sender process, killed when the test ends, whether it passes or not.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The row of `comm` on the screen, by its columns, and its line number.
fn row_of(screen: &str, comm: &str) -> Option<(usize, Vec<String>)> {
    screen.lines().enumerate().find_map(|(i, l)| {
        let cols: Vec<String> = l.split_whitespace().map(String::from).collect();
        (cols.get(1).map(String::as_str) == Some(comm)).then_some((i, cols))
    })
}

/// TX/s of a row: PID COMM RX/s RXB/s TX/s ...
fn tx_rate(row: &[String]) -> f64 {
    row[4].parse().unwrap()
}

#[test]
fn top_shows_two_senders_at_their_rates_and_obeys_its_keys() {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dst = rx.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            set_comm("top-rx");
            rx.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 128];
            while !stop.load(Ordering::Relaxed) {
                let _ = rx.recv(&mut buf);
            }
        })
    };
    let senders = [
        Sender(paced_sender("top-fast", 200, dst)),
        Sender(paced_sender("top-slow", 50, dst)),
    ];
    let pids = senders.each_ref().map(|c| c.0.id().to_string());
    let cmd = format!("{} top -i 1 --port {}", udptrace_bin(), dst.port());
    let tmux = Tmux::start(&cmd);

    // Two full intervals in, both senders show at their rates. The senders
    // keep their average rate exactly; an interval's count can be off by
    // what scheduling on a busy two-CPU machine delays across its edges,
    // a few datagrams: 25% covers that with room, and still tells 200 from 50.
    tmux.wait_for("both senders", |s| {
        row_of(s, "top-fast").is_some() && row_of(s, "top-slow").is_some()
    });
    sleep(Duration::from_millis(1100));
    let screen = tmux.screen();
    assert!(screen.starts_with("udptrace top - "), "{screen}");
    assert!(screen.contains(" backend - every 1 s - "), "{screen}");
    let header = screen
        .lines()
        .find(|l| l.trim_start().starts_with("PID"))
        .unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["PID", "COMM", "RX/s", "RXB/s", "TX/s", "TXB/s", "DROPS/s", "TOP_DROP"]
    );
    let (fast_line, fast) = row_of(&screen, "top-fast").unwrap();
    let (slow_line, slow) = row_of(&screen, "top-slow").unwrap();
    // Two processes: a row each, under its own pid.
    assert_eq!([&fast[0], &slow[0]], [&pids[0], &pids[1]], "{screen}");
    let (rx_line, rx) = row_of(&screen, "top-rx").unwrap();
    assert!((150.0..=250.0).contains(&tx_rate(&fast)), "{screen}");
    assert!((37.5..=62.5).contains(&tx_rate(&slow)), "{screen}");
    let rx_rate: f64 = rx[2].parse().unwrap();
    assert!((187.5..=312.5).contains(&rx_rate), "{screen}");
    assert!(
        rx_line < fast_line && fast_line < slow_line,
        "busiest first:\n{screen}"
    );
    assert!(screen.contains(
        "sorted by datagrams | s/->: next sort column  <-: previous  r: reverse  p/space: pause  q: quit"
    ));

    // r reverses the order.
    tmux.press("r");
    let screen = tmux.wait_for("the reversed order", |s| {
        s.contains("sorted by datagrams, reversed")
    });
    let line = |comm| row_of(&screen, comm).unwrap().0;
    assert!(
        line("top-slow") < line("top-fast") && line("top-fast") < line("top-rx"),
        "{screen}"
    );

    // s sorts by the next column: RX/s, marked in the header; twice more,
    // TX/s, by which the receiver, which sends nothing, comes last.
    tmux.press("r");
    tmux.press("s");
    let screen = tmux.wait_for("the sort column", |s| s.contains("sorted by RX/s |"));
    assert!(screen.contains("[RX/s]"), "{screen}");
    tmux.press("s");
    tmux.press("s");
    let screen = tmux.wait_for("TX/s", |s| s.contains("sorted by TX/s |"));
    assert!(
        screen.contains("[TX/s]") && !screen.contains("[RX/s]"),
        "{screen}"
    );
    let line = |comm| row_of(&screen, comm).unwrap().0;
    assert!(
        line("top-fast") < line("top-slow") && line("top-slow") < line("top-rx"),
        "by TX/s:\n{screen}"
    );
    // <- goes back a column.
    tmux.press("Left");
    tmux.wait_for("RXB/s", |s| {
        s.contains("sorted by RXB/s |") && s.contains("[RXB/s]")
    });

    // p pauses: the screen stops changing across a refresh.
    tmux.press("p");
    let paused = tmux.wait_for("PAUSED", |s| {
        s.lines().next().unwrap().ends_with(" - PAUSED")
    });
    sleep(Duration::from_millis(1500));
    assert_eq!(tmux.screen(), paused, "a paused screen does not refresh");
    tmux.press("p");
    tmux.wait_for("a refresh", |s| s != paused && !s.contains("PAUSED"));

    // A resize redraws at the new width.
    tmux.run(&["resize-window", "-x", "120", "-y", "20"]);
    tmux.wait_for("the resized screen", |s| {
        s.lines().count() == 20 && s.lines().last().unwrap().contains("q: quit")
    });

    // q quits and gives the terminal back.
    tmux.press("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(Instant::now() < deadline, "top still running after q");
        sleep(Duration::from_millis(100));
    }

    drop(senders);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}
