//! The terminal of interactive `harrier top`: stdin in raw mode (keys one by one, no echo, Ctrl-C as a key),
//! the alternate screen, and both restored when the [`Terminal`] is dropped, on every way out (an error, a
//! panic); SIGINT, SIGTERM and SIGHUP end the loop instead of killing the process, so that the drop runs.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Raised by SIGINT, SIGTERM or SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What came while waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Input {
    /// These bytes were typed.
    Keys(Vec<u8>),
    /// The time passed.
    Timeout,
    /// Stdin ended.
    Eof,
    /// A signal asked to stop.
    Stop,
}

/// The terminal set up for the loop; dropping it restores it.
pub(super) struct Terminal {
    /// Stdin's settings before raw mode (None: stdin is not a terminal, and keys are not read).
    saved: Option<libc::termios>,
    /// Stdout is a terminal, switched to the alternate screen.
    screen: bool,
}

impl Terminal {
    pub(super) fn open() -> io::Result<Terminal> {
        install_signals()?;
        let mut terminal = Terminal {
            saved: None,
            screen: false,
        };
        let stdin = io::stdin();
        if stdin.is_terminal() {
            let fd = stdin.as_raw_fd();
            // SAFETY: a zeroed termios is a valid value for tcgetattr to fill in.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is stdin, open for the whole process; `saved` is a live termios.
            if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            // Keys one by one, no echo, Ctrl-C and Ctrl-Z as keys; output processing stays (`\n` is a new line).
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            // SAFETY: as above; `raw` is a live termios.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
                return Err(io::Error::last_os_error());
            }
            terminal.saved = Some(saved);
        }
        if io::stdout().is_terminal() {
            // The alternate screen, without the cursor: the shell's screen comes back at exit.
            let mut out = io::stdout().lock();
            out.write_all(b"\x1b[?1049h\x1b[?25l")?;
            out.flush()?;
            terminal.screen = true;
        }
        Ok(terminal)
    }

    /// Keys are read (stdin is a terminal).
    pub(super) fn keys(&self) -> bool {
        self.saved.is_some()
    }

    /// Waits up to `timeout` for keys (or only for the time, when stdin is not a terminal), or a stop signal.
    pub(super) fn wait(&self, timeout: Duration) -> io::Result<Input> {
        if STOP.load(Ordering::Relaxed) {
            return Ok(Input::Stop);
        }
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut poll = libc::pollfd {
            fd: io::stdin().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let fds = if self.keys() { 1 } else { 0 };
        // SAFETY: `poll` is one live pollfd, and `fds` is 0 or 1.
        let n = unsafe { libc::poll(&mut poll, fds, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(if STOP.load(Ordering::Relaxed) {
                    Input::Stop
                } else {
                    Input::Timeout
                });
            }
            return Err(e);
        }
        if n == 0 || fds == 0 {
            return Ok(Input::Timeout);
        }
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is a live buffer of `buf.len()` bytes; stdin is open.
        let read = unsafe { libc::read(poll.fd, buf.as_mut_ptr().cast(), buf.len()) };
        match read {
            0 => Ok(Input::Eof),
            n if n > 0 => Ok(Input::Keys(buf[..n as usize].to_vec())),
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(Input::Timeout),
                    _ => Err(e),
                }
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.screen {
            let mut out = io::stdout().lock();
            let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
            let _ = out.flush();
        }
        if let Some(saved) = &self.saved {
            // SAFETY: stdin is open; `saved` is the termios tcgetattr filled in.
            unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSANOW, saved) };
        }
    }
}

fn install_signals() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic (async-signal-safe), an empty
        // mask and no SA_RESTART, so that a wait in poll returns at once.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The size of the terminal on stdout (columns, rows), or None when stdout is not a terminal.
pub(super) fn stdout_size() -> Option<(usize, usize)> {
    let stdout = io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    // SAFETY: a zeroed winsize is valid for TIOCGWINSZ to fill in; stdout is open.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    if !ok || size.ws_col == 0 {
        return Some((80, 24));
    }
    Some((usize::from(size.ws_col), usize::from(size.ws_row.max(3))))
}
