// A webhook receiver for bridge in Node.js (18+): verify, then act.
//   npm install standardwebhooks
//   WEBHOOK_SECRET=whsec_... PORT=8080 node receiver.js
const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const verifier = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set(); // webhook-id repeats on a retry: handle each event once

http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let event;
    try {
      event = verifier.verify(body, req.headers); // throws if forged or altered
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!seen.has(event.id)) {
      seen.add(event.id);
      if (event.type === "job.succeeded") {
        console.log(`${event.data.id} succeeded: ${event.data.result.video_url}`);
      } else {
        console.log(`${event.type} ${event.data.id}`);
      }
    }
    res.writeHead(204).end(); // any 2xx: delivered; anything else is retried
  });
}).listen(Number(process.env.PORT || 8080), "127.0.0.1");
