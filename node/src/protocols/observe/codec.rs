//! The wire format of `/ledgermesh/observe/1`: one length-prefixed protobuf
//! message each way over a request-response stream.

use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_proto::v1 as pb;
use ledgermesh_protocol::framing::{split_frame, MAX_FRAME};
use libp2p::StreamProtocol;
use prost::Message;
use std::io;

/// The protocol name.
pub const OBSERVE_PROTOCOL: StreamProtocol = StreamProtocol::new("/ledgermesh/observe/1");

/// Length-prefixed protobuf codec for the observe protocol.
#[derive(Debug, Clone, Default)]
pub struct ObserveCodec;

async fn read_msg<T: futures::AsyncRead + Unpin + Send, M: Message + Default>(
    io: &mut T,
) -> io::Result<M> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 512];
    loop {
        if let Some((body, _)) = split_frame(&buf).map_err(io::Error::other)? {
            return M::decode(body).map_err(io::Error::other);
        }
        let n = io.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > MAX_FRAME + 4 {
            return Err(io::Error::other("observe message too large"));
        }
    }
}

async fn write_msg<T: futures::AsyncWrite + Unpin + Send, M: Message>(
    io: &mut T,
    m: &M,
) -> io::Result<()> {
    let body = m.encode_to_vec();
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl libp2p::request_response::Codec for ObserveCodec {
    type Protocol = StreamProtocol;
    type Request = pb::ObserveRequest;
    type Response = pb::ObserveResponse;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        read_msg(io).await
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        read_msg(io).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()> {
        write_msg(io, &req).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Self::Response,
    ) -> io::Result<()> {
        write_msg(io, &res).await
    }
}
