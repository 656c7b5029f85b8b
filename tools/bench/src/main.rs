//! ringmq-bench: a load generator for any MQTT broker.
//!
//! Thread-per-core like the broker it was written for (one glommio executor
//! per worker thread), so the tool is not the bottleneck; it reuses ringmq's
//! codec. See `ringmq-bench --help` for the scenarios.

mod args;
mod client;
mod report;
mod restart;
mod run;
mod stuck;
mod track;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mimalloc::MiMalloc;
use ringmq::protocol::QoS;

use args::{Args, Scenario};
use run::{phase, Control};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// How long setup phases may take before the run is declared failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args = Args::parse();
    let quiet = args.quiet;
    let json = args.json;
    let hdr_out = args.hdr_out.clone();
    let plot = args.plot.clone();
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            std::process::exit(2);
        }
    };
    // A broker the bench runs itself, to kill and restart.
    let mut broker = plan.restart_cmd.as_deref().map(|cmd| {
        restart::Broker::start(cmd, plan.broker, SETUP_TIMEOUT).unwrap_or_else(|e| {
            eprintln!("ringmq-bench: {e}");
            std::process::exit(1);
        })
    });
    let ctl = Arc::new(Control::new(plan.threads));
    let workers = run::run(&plan, &ctl);
    let progress = |label: &str, started: Instant| {
        if quiet {
            return;
        }
        let (s, a, r) = ctl.totals();
        let t = started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r{label:>10} {:6.1}s  sent {:>10} ({:>9.0}/s)  acked {:>10}  received {:>10} ({:>9.0}/s)   ",
            t,
            s,
            s as f64 / t,
            a,
            r,
            r as f64 / t
        );
        let _ = std::io::stderr().flush();
    };
    let fail = |what: &str| -> ! {
        ctl.phase.store(phase::STOP, Ordering::Release);
        let err = ctl.first_error.lock().ok().and_then(|e| e.clone());
        eprintln!("\nringmq-bench: {what}: {}", err.unwrap_or_default());
        std::process::exit(1);
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !done() {
            if Instant::now() > deadline {
                fail(&format!("timed out: {what}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };

    let started = Instant::now();
    wait_for("subscribers connecting", &|| {
        ctl.subs_ready.load(Ordering::Acquire) >= plan.subscribers
    });
    if plan.scenario != Scenario::Connections && ctl.failures.load(Ordering::Relaxed) > 0 {
        fail("a subscriber failed to connect");
    }
    let connect_time = started.elapsed();
    let stuck = match stuck::subscribe(&plan) {
        Ok(s) => s,
        Err(e) => fail(&format!("a stuck subscriber failed to subscribe: {e}")),
    };
    ctl.phase
        .store(phase::CONNECT_PUBLISHERS, Ordering::Release);
    wait_for("publishers connecting", &|| {
        ctl.pubs_ready.load(Ordering::Acquire) >= plan.publishers
    });
    if ctl.failures.load(Ordering::Relaxed) > 0 && plan.scenario != Scenario::Connections {
        fail("a publisher failed to connect");
    }
    let t0 = Instant::now();
    ctl.phase.store(phase::PUBLISH, Ordering::Release);
    let mut last = Instant::now();
    let label = args::name(plan.scenario);
    let mut killed_after = None;
    let kill = |broker: &mut Option<restart::Broker>, at: Duration| {
        let b = broker.as_mut()?;
        ctl.killed.store(true, Ordering::Release);
        b.kill9();
        Some(at)
    };
    // Publishing (or, for `connections`, holding the clients).
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if killed_after.is_none() && plan.kill_after.is_some_and(|k| t0.elapsed() >= k) {
            killed_after = kill(&mut broker, t0.elapsed());
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            progress(label, t0);
        }
        let elapsed = t0.elapsed();
        if plan.count.is_none() && elapsed >= plan.duration {
            ctl.phase.store(phase::STOP_PUBLISHING, Ordering::Release);
        }
        if ctl.pubs_done.load(Ordering::Acquire) >= plan.publishers
            && (plan.scenario != Scenario::Connections || elapsed >= plan.duration)
        {
            break;
        }
    }
    let publish_time = t0.elapsed();
    // Drain: wait for what subscribers should still receive.
    let factor = run::copies(&plan);
    let mut drain_time = None;
    let mut restart_time = None;
    if broker.is_some() {
        if killed_after.is_none() {
            killed_after = kill(&mut broker, t0.elapsed());
        }
        let t = Instant::now();
        if let Some(b) = broker.as_mut() {
            if let Err(e) = b.restart(SETUP_TIMEOUT) {
                fail(&e);
            }
        }
        restart_time = Some(t.elapsed());
    }
    if plan.scenario == Scenario::Backlog && plan.leave_backlog {
        // Nothing to drain: the messages stay queued in the broker.
    } else if plan.scenario == Scenario::Backlog {
        ctl.phase.store(phase::RECONNECT, Ordering::Release);
        let deadline = Instant::now() + plan.drain.max(SETUP_TIMEOUT);
        // After a restart what was lost never comes: give up once nothing
        // has arrived for --drain.
        let mut seen = (ctl.totals().2, Instant::now());
        let target = || {
            let (_, acked, _) = ctl.totals();
            let per_sub = if restart_time.is_some() {
                acked
            } else {
                plan.count.unwrap_or(0) * plan.publishers as u64
            };
            per_sub * factor
        };
        // Every worker's subscribers are done, not just the first worker's.
        while ctl.unique() < target() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            if restart_time.is_some() {
                let r = ctl.totals().2;
                if r != seen.0 {
                    seen = (r, Instant::now());
                } else if seen.1.elapsed() >= plan.drain {
                    break;
                }
            }
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                progress("drain", t0);
            }
        }
        let (from, to) = (
            ctl.reconnected_at.load(Ordering::Acquire),
            ctl.drained_at.load(Ordering::Acquire),
        );
        if to > from {
            drain_time = Some(Duration::from_nanos(to - from));
        }
    } else if plan.scenario != Scenario::Connections {
        let deadline = Instant::now() + plan.drain;
        loop {
            let (s, a, _) = ctl.totals();
            let target = if plan.qos == QoS::AtMostOnce { s } else { a } * factor;
            // First arrivals: duplicates must not end the drain early.
            if ctl.unique() >= target || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let total_time = t0.elapsed();
    ctl.phase.store(phase::STOP, Ordering::Release);
    drop(stuck);
    if let Some(b) = broker.take() {
        b.stop(Duration::from_secs(10));
    }
    progress(label, t0);
    if !quiet {
        eprintln!();
    }

    let results: Vec<run::WorkerResult> = workers
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .collect();
    let mut latency = results[0].latency.clone();
    let mut connect = results[0].connect.clone();
    let mut logs = vec![track::SubscriberLog::new(); plan.subscribers];
    let mut published = vec![(0u64, 0u64); plan.publishers];
    let mut connected = 0;
    for (k, r) in results.into_iter().enumerate() {
        if k > 0 {
            let _ = latency.add(&r.latency);
            let _ = connect.add(&r.connect);
        }
        connected += r.connected;
        for (j, log) in r.logs {
            logs[j] = log;
        }
        for (i, sent, acked) in r.published {
            published[i] = (sent, acked);
        }
    }
    let (sent, acked, received) = ctl.totals();
    // Members of one shared subscription: what counts is what the group got.
    let mut members = Vec::new();
    if plan.shared.is_some() {
        members = logs
            .iter()
            .map(|l| l.values().map(|t| t.unique + t.duplicates).sum())
            .collect();
        logs = vec![track::merge(&logs)];
    }
    let shared = plan.shared.is_some();
    let integrity = track::integrity(&logs, plan.publishers, |s, p| {
        // A group's log stands for its members, who share one filter.
        let copies = run::matching(&plan, if shared { 0 } else { s }, p);
        // Left in the broker on purpose: not expected here, so not lost.
        if plan.leave_backlog || copies == 0 {
            return (0, 1);
        }
        let (sent, acked) = published[p];
        let want = if plan.qos == QoS::AtMostOnce {
            sent
        } else {
            acked
        };
        (want, copies)
    });
    let failures = ctl.failures.load(Ordering::Relaxed);
    let report = report::Report {
        publish_time: if plan.scenario == Scenario::Connections {
            connect_time
        } else {
            publish_time
        },
        total_time,
        sent,
        acked,
        received,
        integrity,
        latency,
        connect,
        connected,
        failures,
        first_error: ctl.first_error.lock().ok().and_then(|e| e.clone()),
        drain_time,
        killed_after,
        restart_time,
        sent_by_publisher: published.iter().map(|&(sent, _)| sent).collect(),
        received_by_member: members,
        plan,
    };
    if let Some(path) = hdr_out {
        if let Err(e) = std::fs::write(&path, report::hgrm(&report.latency)) {
            eprintln!("ringmq-bench: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = plot {
        let title = format!(
            "ringmq-bench {} against {}: {}",
            args::name(report.plan.scenario),
            report.plan.broker,
            report::describe(&report.plan)
        );
        let svg = report::svg(&title, &[(label.to_string(), report.latency.clone())]);
        if let Err(e) = std::fs::write(&path, svg) {
            eprintln!("ringmq-bench: cannot write {}: {e}", path.display());
        }
    }
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
