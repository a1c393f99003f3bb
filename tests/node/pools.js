// Real node-postgres pools (what Prisma 7's adapter runs on), driven by tests/test_node_pools.py.
//   node pools.js instances URL APP N SIZE  -> N pools of SIZE connections each, all left idle
//   node pools.js cap URL APP SIZE          -> one pool of SIZE, 3 x SIZE slow queries queued
// Prints "ready" once the connections are open; runs until killed.
"use strict";
const { Pool } = require("pg");

const [mode, url, app, a, b] = process.argv.slice(2);

async function instances(n, size) {
  const pools = Array.from({ length: n }, () =>
    new Pool({ connectionString: url, application_name: app, max: size, idleTimeoutMillis: 0 }));
  for (const pool of pools) {
    const clients = await Promise.all(Array.from({ length: size }, () => pool.connect()));
    for (const client of clients) client.release();
  }
  return pools;
}

async function cap(size) {
  const pool = new Pool({ connectionString: url, application_name: app, max: size });
  for (let i = 0; i < 3 * size; i++) pool.query("SELECT pg_sleep(120)").catch(() => {});
  while (pool.totalCount < size) await new Promise((r) => setTimeout(r, 50));
  while (pool.waitingCount < 2 * size) await new Promise((r) => setTimeout(r, 50));
  return [pool];
}

(mode === "cap" ? cap(Number(a)) : instances(Number(a), Number(b)))
  .then((pools) => {
    process.stdout.write(`ready ${pools.length} ${pools[0].totalCount} ${pools[0].waitingCount}\n`);
    setInterval(() => {}, 1 << 30);
  })
  .catch((err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
