//! The TUN device: opened through tun-rs with Linux offloads (TSO/GSO on
//! the way out of the kernel, GRO on the way in), given the node's mesh
//! address, and pumped to and from the tunnel's channels.

use ledgermesh_protocol::vpn::{Ipv4Net, PREFIX_LEN};
use std::io;
use std::net::Ipv6Addr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Headroom before each packet written: the virtio header offloads need.
const OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// Opens the device `name` with `mtu` and `address`/48 (the route to the
/// whole mesh goes through it), and `v4` where given (with the route to
/// its network). IPv6 is switched on for this device alone, where a host
/// has it off by default.
pub fn open(
    name: &str,
    mtu: u16,
    address: Ipv6Addr,
    v4: Option<Ipv4Net>,
) -> io::Result<AsyncDevice> {
    let mut builder = DeviceBuilder::new().name(name).mtu(mtu).offload(true);
    if let Some(v4) = v4 {
        builder = builder.ipv4(v4.addr(), v4.prefix_len(), None);
    }
    let dev = builder.build_async()?;
    let name = dev.name()?;
    let switch = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if std::fs::read_to_string(&switch).is_ok_and(|v| v.trim() == "1") {
        std::fs::write(&switch, "0")?;
    }
    dev.add_address_v6(address, PREFIX_LEN)?;
    dev.enabled(true)?;
    Ok(dev)
}

/// Segments one offloaded packet may come in: 64 KiB at the smallest MSS
/// Linux allows (48 bytes), which a remote TCP end may choose.
const MAX_SEGMENTS: usize = 65_535 / 48 + 1;

/// Whether a device error ends the device (it is gone), rather than one
/// read or write.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EBADF | libc_errno::EBADFD | libc_errno::ENODEV | libc_errno::ENXIO)
    )
}

/// The errno values of a device that is gone (Linux).
mod libc_errno {
    pub const ENXIO: i32 = 6;
    pub const EBADF: i32 = 9;
    pub const ENODEV: i32 = 19;
    pub const EBADFD: i32 = 77;
}

/// Reads packets from the device (segments of a large offloaded one
/// apart) into `to_tunnel` until the tunnel is gone, or the device (its
/// error is returned). A packet that cannot be read is skipped; a full
/// tunnel queue drops the packet, as a congested link would.
pub async fn read(
    dev: Arc<AsyncDevice>,
    mtu: u16,
    to_tunnel: mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    let mut original = vec![0u8; OFFSET + usize::from(u16::MAX)];
    // A segment is at most an MSS and its headers: within the MTU.
    let mut bufs = vec![vec![0u8; usize::from(mtu)]; MAX_SEGMENTS.max(IDEAL_BATCH_SIZE)];
    let mut sizes = vec![0usize; bufs.len()];
    loop {
        let n = match dev
            .recv_multiple(&mut original, &mut bufs, &mut sizes, 0)
            .await
        {
            Ok(n) => n,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "a packet from the TUN device was skipped");
                continue;
            }
        };
        for (buf, size) in bufs.iter().zip(&sizes).take(n) {
            if to_tunnel.is_closed() {
                return Ok(());
            }
            let _ = to_tunnel.try_send(buf[..*size].to_vec());
        }
    }
}

/// Writes the tunnel's packets to the device, what is waiting in one call
/// (coalesced by GRO where the kernel takes it), until the tunnel closes.
pub async fn write(
    dev: Arc<AsyncDevice>,
    mut from_tunnel: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut gro = GROTable::new();
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(IDEAL_BATCH_SIZE);
    let with_headroom = |p: Vec<u8>| {
        let mut b = vec![0u8; OFFSET];
        b.extend_from_slice(&p);
        b
    };
    while let Some(first) = from_tunnel.recv().await {
        bufs.clear();
        bufs.push(with_headroom(first));
        while bufs.len() < IDEAL_BATCH_SIZE {
            match from_tunnel.try_recv() {
                Ok(p) => bufs.push(with_headroom(p)),
                Err(_) => break,
            }
        }
        match dev.send_multiple(&mut gro, &mut bufs, OFFSET).await {
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => tracing::debug!(error = %e, "packets for the TUN device were lost"),
            Ok(_) => {}
        }
    }
    Ok(())
}
