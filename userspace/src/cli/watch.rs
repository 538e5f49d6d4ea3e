//! `top --watch`: a live view on the terminal's alternate screen, redrawn every second.
//!
//! The terminal is restored on every way out: `q`/Esc/Ctrl-C, SIGTERM/SIGINT/SIGHUP, an error
//! (the guard's `Drop`) and a panic (a hook that runs before the panic message is printed).

use std::{
    io::{self, IsTerminal as _, Write as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use crossterm::{
    cursor, event, execute, queue,
    style::Print,
    terminal::{self, ClearType},
};
use swarmwall::api::{client::Client, types::TopView};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{
    Refused, TopArgs, fmt,
    remote::{top_lines, top_query},
};

const REFRESH: Duration = Duration::from_secs(1);

/// Set while the terminal is in raw mode on the alternate screen, for the panic hook.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub async fn top(client: &Client, args: TopArgs) -> Result<()> {
    if !io::stdout().is_terminal() {
        return Err(Refused(
            "--watch needs a terminal on standard output; without --watch, top prints once".into(),
        )
        .into());
    }
    let client = client.clone().with_timeout(Duration::from_secs(5));
    let query = top_query(&args);
    // Fail before touching the terminal if the daemon isn't there at all.
    let mut last: Result<TopView, String> = Ok(client.top(&query).await?);
    let signal = |kind| signal(kind).context("installing signal handlers");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let _guard = Screen::enter().context("setting up the terminal")?;
    let (mut keys, stop) = spawn_key_reader();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    let result = loop {
        if let Err(e) = draw(&last) {
            break Err(e);
        }
        tokio::select! {
            _ = tick.tick() => {
                last = match client.top(&query).await {
                    Ok(v) => Ok(v),
                    Err(e) => Err(e.to_string()),
                };
            }
            k = keys.recv() => match k {
                Some(Input::Redraw) => {}
                Some(Input::Quit) | None => break Ok(()),
            },
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = hup.recv() => break Ok(()),
        }
    };
    stop.store(true, Ordering::Relaxed);
    result
}

/// What the key reader reports.
enum Input {
    Quit,
    Redraw,
}

/// Reads keys on a thread (crossterm's reads block); stops when the flag is set.
fn spawn_key_reader() -> (mpsc::UnboundedReceiver<Input>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            let input = match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => match event::read() {
                    Ok(event::Event::Key(k)) if k.kind != event::KeyEventKind::Release => {
                        let ctrl_c = k.code == event::KeyCode::Char('c')
                            && k.modifiers.contains(event::KeyModifiers::CONTROL);
                        match k.code {
                            event::KeyCode::Char('q' | 'Q') | event::KeyCode::Esc => Input::Quit,
                            _ if ctrl_c => Input::Quit,
                            _ => continue,
                        }
                    }
                    Ok(event::Event::Resize(..)) => Input::Redraw,
                    Ok(_) => continue,
                    Err(_) => Input::Quit,
                },
                Err(_) => Input::Quit,
            };
            let quit = matches!(input, Input::Quit);
            if tx.send(input).is_err() || quit {
                break;
            }
        }
    });
    (rx, stop)
}

/// Raw mode on the alternate screen, for as long as it lives.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let screen = Screen;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

fn draw(view: &Result<TopView, String>) -> Result<()> {
    // A pseudo-terminal without a window size reports 0x0.
    let (w, h) = match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => (w, h),
        _ => (80, 24),
    };
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let lines = screen_lines(view, &now, usize::from(w), usize::from(h));
    let mut out = io::stdout().lock();
    for (i, line) in lines.iter().enumerate() {
        let row = u16::try_from(i).unwrap_or(u16::MAX);
        queue!(
            out,
            cursor::MoveTo(0, row),
            Print(line),
            terminal::Clear(ClearType::UntilNewLine)
        )?;
    }
    let below = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    queue!(
        out,
        cursor::MoveTo(0, below),
        terminal::Clear(ClearType::FromCursorDown)
    )?;
    out.flush()?;
    Ok(())
}

/// The screen: a title line, the `top` table (or the last error), cut to the terminal's size.
fn screen_lines(
    view: &Result<TopView, String>,
    now: &str,
    width: usize,
    height: usize,
) -> Vec<String> {
    let mut lines = vec![format!("swarmwall top  {now}  (q quits)")];
    match view {
        Ok(v) => lines.extend(top_lines(v)),
        Err(e) => {
            lines.push(format!("cannot refresh: {e}"));
            lines.push("retrying every second".into());
        }
    }
    lines.truncate(height.max(1));
    lines.iter().map(|l| fmt::truncate(l, width)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmwall::api::types::TalkerView;

    #[test]
    fn screen_fits_the_terminal() {
        let talker = |i: u32| TalkerView {
            addr: format!("192.0.2.{i}"),
            pps: 1000.0,
            bps: 8e6,
            drop_pps: 0.0,
            packets: 5000,
            bytes: 1_000_000,
            dropped: 0,
            rules: vec![],
        };
        let v = TopView {
            window_s: 10.0,
            by: "pps".into(),
            tracked: 42,
            sources: (1..=30).map(talker).collect(),
        };
        let lines = screen_lines(&Ok(v), "2026-05-20T12:00:00Z", 40, 10);
        assert_eq!(lines.len(), 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 40));
        assert!(lines[1].starts_with("30 of 42 tracked sources by pps"));
        let lines = screen_lines(&Err("boom".into()), "t", 80, 24);
        assert_eq!(lines[1], "cannot refresh: boom");
    }
}
