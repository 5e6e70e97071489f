// Waiting for a nonblocking fd to become readable without blocking the JS thread, as both receive
// loops here do (src/udp/nfqueue.ts, src/udp/udp_socket.ts): poll() declared nonblocking runs on a
// worker thread; an eventfd in the same poll set lets close() wake the wait at once.

import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, EINTR, errno, libc, OsError, POLLIN } from "../../ffi/libc.ts";

export class WakeablePoll {
  readonly #fds = new Uint8Array(16);
  readonly #wakeFd: number;
  readonly #what: string;

  /** `what` names the fd in errors ("nfqueue 7", "UDP 0.0.0.0:53"). Throws OsError. */
  constructor(fd: number, what: string) {
    this.#what = what;
    this.#wakeFd = libc().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.#wakeFd < 0) throw new OsError(`create the ${what} wake-up eventfd`, errno());
    const fds = new DataView(this.#fds.buffer);
    fds.setInt32(0, fd, true);
    fds.setInt16(4, POLLIN, true);
    fds.setInt32(8, this.#wakeFd, true);
    fds.setInt16(12, POLLIN, true);
  }

  /** Until the fd is readable or wake() was called; timeout 0 only yields to the event loop. */
  async wait(timeoutMs: number): Promise<void> {
    const ready = await libc().poll_async(this.#fds, 2n, timeoutMs);
    if (ready < 0) {
      const code = errno();
      if (code !== EINTR) throw new OsError(`wait for ${this.#what}`, code);
    }
  }

  wake(): void {
    const one = new Uint8Array(8);
    one[0] = 1;
    libc().write(this.#wakeFd, one, 8n);
  }

  /** Wakes the loop and waits until it has ended (`finished` settles; a fatal error was already reported there). */
  async stop(finished: Promise<void>): Promise<void> {
    this.wake();
    await finished.catch(() => {});
  }

  close(): void {
    closeFd(this.#wakeFd);
  }
}
