"""Two or more nodes meet over TCP the way torch.distributed does: rank 0 listens on
MASTER_ADDR:MASTER_PORT, every other rank connects and says hello, rank 0 answers each one.

FAIL_RANK=N makes rank N exit with code 3 instead (to see a failed node stop the task).
"""

import os
import socket
import sys
import time

rank, world = int(os.environ["NODE_RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"rank {rank}/{world}: master {addr}:{port}", flush=True)
if os.environ.get("FAIL_RANK") == str(rank):
    print(f"rank {rank}: failing on purpose", flush=True)
    sys.exit(3)
if rank == 0:
    with socket.create_server((addr, port)) as server:
        for _ in range(world - 1):
            conn, _ = server.accept()
            with conn:
                msg = conn.recv(1024).decode()
                print(f"rank 0: got {msg!r}", flush=True)
                conn.sendall(f"welcome from rank 0 to {msg.split()[-1]}".encode())
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        conn.sendall(f"hello from rank {rank}".encode())
        print(f"rank {rank}: got {conn.recv(1024).decode()!r}", flush=True)
print(f"rank {rank}: done", flush=True)
