//! One connection: commands are read many per read, run one at a time in
//! arrival order (so a pipeline reads its own writes), and their replies
//! written in that order. Both directions are bounded: input to one
//! command (the codec's gate) plus one read, output to [`FLUSH_AT`] plus
//! one reply; a client that stops reading stops being read.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::watch;
use tracing::debug;

use super::batch;
use super::codec;
use super::commands;
use super::reply::Reply;
use super::session::Session;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Replies waiting past this many bytes are written before the next
/// command runs.
const FLUSH_AT: usize = 64 * 1024;
/// An idle connection's input buffer shrinks back when it grew past this
/// (a large value passed through it).
const KEEP_BUFFER: usize = 1 << 20;

/// What the connection does after the commands it has.
enum Next {
    Read,
    Close,
    /// After a protocol error: close, but read what the client still
    /// sends for a moment, so that unread input does not make the kernel
    /// reset the connection and lose the error reply.
    Linger,
}

/// How long, and how many bytes, a connection closed on a protocol error
/// reads and drops what its client still sends.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// Serves `stream` until the client leaves, sends QUIT, breaks the
/// protocol, or `stop` is set (then between commands).
pub(crate) async fn serve<S>(stream: S, mut session: Session, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::new();
    let deadline = session.gw.facts.request_timeout;
    loop {
        let next = run_buffered(&mut session, &mut input, &mut output, &mut wr).await;
        if !flush(&mut wr, &mut output, deadline).await {
            return;
        }
        match next {
            Next::Read => {}
            Next::Close => {
                let _ = wr.shutdown().await;
                return;
            }
            Next::Linger => {
                let _ = wr.shutdown().await;
                drain(&mut rd).await;
                return;
            }
        }
        if input.is_empty() && input.capacity() > KEEP_BUFFER {
            input = BytesMut::with_capacity(READ_CHUNK);
        }
        input.reserve(READ_CHUNK);
        // A command begun must arrive whole within the request timeout
        // (slow senders do not hold a connection open); an idle
        // connection waits as long as the gateway's idle timeout allows.
        let wait = if input.is_empty() {
            session.gw.facts.idle_timeout
        } else {
            Some(deadline)
        };
        let read = tokio::select! {
            biased;
            _ = stop.changed() => return,
            read = within(wait, rd.read_buf(&mut input)) => read,
        };
        match read {
            Some(Ok(0)) | Some(Err(_)) => return,
            Some(Ok(_)) => {}
            None if input.is_empty() => {
                debug!("closing an idle RESP connection");
                return;
            }
            None => {
                session.gw.metrics.protocol_errors.inc();
                let reply = Reply::err(format!(
                    "ERR Protocol error: the command did not arrive within {} ms",
                    deadline.as_millis()
                ));
                reply.encode(session.proto, &mut output);
                let _ = flush(&mut wr, &mut output, deadline).await;
                return;
            }
        }
    }
}

/// `io` within `limit` (`None`: no limit); `None` if the time ran out.
async fn within<T>(limit: Option<Duration>, io: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, io).await.ok(),
        None => Some(io.await),
    }
}

/// Runs every whole command in `input`, in order, encoding the replies
/// into `output` (writing them out as it grows). Consecutive plain GETs or
/// SETs run together ([`batch`]).
async fn run_buffered<W: AsyncWrite>(
    session: &mut Session,
    input: &mut BytesMut,
    output: &mut BytesMut,
    wr: &mut WriteHalf<W>,
) -> Next {
    let deadline = session.gw.facts.request_timeout;
    let mut run = batch::Run::default();
    loop {
        let (args, more, error) = match codec::next_command(input, &session.input_limits()) {
            Ok(Some(args)) => (run.offer(session, args), true, None),
            Ok(None) => (None, false, None),
            Err(e) => (None, false, Some(e)),
        };
        // What is pending runs before anything else is answered.
        if (!more || args.is_some()) && !run.is_empty() {
            for reply in run.run(session).await {
                answer(session, reply, output);
                if output.len() >= FLUSH_AT && !flush(wr, output, deadline).await {
                    return Next::Close;
                }
            }
        }
        if let Some(e) = error {
            debug!(error = %e, "RESP protocol error; closing");
            session.gw.metrics.protocol_errors.inc();
            Reply::err(format!("ERR Protocol error: {e}")).encode(session.proto, output);
            return Next::Linger;
        }
        if !more {
            return Next::Read;
        }
        if let Some(args) = args {
            let reply = commands::execute(session, &args).await;
            answer(session, reply, output);
            if session.closing {
                return Next::Close;
            }
        }
        if output.len() >= FLUSH_AT && !flush(wr, output, deadline).await {
            return Next::Close;
        }
    }
}

/// Counts `reply` and encodes it into `output`.
fn answer(session: &Session, reply: Reply, output: &mut BytesMut) {
    session.gw.metrics.commands.inc();
    if reply.is_error() {
        session.gw.metrics.errors.inc();
    }
    reply.encode(session.proto, output);
}

/// Reads and drops input for at most [`LINGER`] and [`LINGER_BYTES`].
async fn drain(rd: &mut (impl AsyncRead + Unpin)) {
    let mut sink = vec![0u8; READ_CHUNK];
    let _ = tokio::time::timeout(LINGER, async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Writes out `output`; false if the client did not take it in time.
async fn flush<W: AsyncWrite>(
    wr: &mut WriteHalf<W>,
    output: &mut BytesMut,
    deadline: Duration,
) -> bool {
    if output.is_empty() {
        return true;
    }
    let written = tokio::time::timeout(deadline, async {
        wr.write_all(output).await?;
        wr.flush().await
    })
    .await;
    output.clear();
    matches!(written, Ok(Ok(())))
}
