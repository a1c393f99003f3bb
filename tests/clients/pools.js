// A Node process holding POOLS node-postgres pools (pg.Pool) with PER open connections each.
// Connection settings come from libpq's PG* variables (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGAPPNAME), as node-postgres reads them. Prints "ready" once every connection is open and
// idle in its pool, then holds them until stdin closes.
const { Pool } = require('pg');

const [pools, per] = process.argv.slice(2).map(Number);

async function main() {
  const all = [];
  for (let i = 0; i < pools; i += 1) {
    const pool = new Pool({ max: per, idleTimeoutMillis: 0 });
    const clients = await Promise.all(Array.from({ length: per }, () => pool.connect()));
    clients.forEach((client) => client.release());
    all.push(pool);
  }
  process.stdout.write('ready\n');
  process.stdin.on('end', async () => {
    await Promise.all(all.map((pool) => pool.end()));
    process.exit(0);
  });
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
