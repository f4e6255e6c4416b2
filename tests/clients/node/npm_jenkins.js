// The npm `jenkins` client (behaviour §8), unchanged, through crumb-proxy,
// without credentials.
//
// For every POST it first GETs /crumbIssuer/api/json and copies that
// answer's Set-Cookie into the POST (silas/node-jenkins#82). Through the
// proxy there is no Set-Cookie to copy, and the crumb it sends is replaced:
// it must not matter. Like the Python scripts (tests/clients/harness.py) it
// talks to the test on stdout/stdin: `@@expire-sessions`, `@@result {json}`.
"use strict";

const readline = require("readline");
const Jenkins = require("jenkins");

let url = process.env.CRUMB_PROXY_URL;
if (!url) throw new Error("CRUMB_PROXY_URL is not set");
url = url.replace(/\/+$/, "");
for (const name of Object.keys(process.env)) {
  if (/PASSWORD|TOKEN|JENKINS_USER/i.test(name)) {
    throw new Error(`the client must run without credentials, but ${name} is set`);
  }
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function step(message) {
  console.log(`- ${message}`);
}

function expect(condition, message) {
  if (!condition) throw new Error(`FAILED: ${message}`);
}

async function expireSessions() {
  console.log("@@expire-sessions");
  const answer = await lines.next();
  expect(answer.value === "expired", `the test answered ${answer.value}`);
  step("Jenkins sessions expired");
}

async function waitUntil(what, probe) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const value = await probe();
    if (value) return value;
    expect(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function freestyle(description, command) {
  return (
    "<?xml version='1.1' encoding='UTF-8'?>\n<project>\n" +
    `  <description>${description}</description>\n` +
    "  <keepDependencies>false</keepDependencies>\n" +
    "  <properties><hudson.model.ParametersDefinitionProperty><parameterDefinitions>" +
    "<hudson.model.StringParameterDefinition><name>GREETING</name><description></description>" +
    "<defaultValue>hi</defaultValue><trim>false</trim></hudson.model.StringParameterDefinition>" +
    "</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>\n" +
    '  <scm class="hudson.scm.NullSCM"/>\n  <disabled>false</disabled>\n' +
    `  <builders><hudson.tasks.Shell><command>${command}</command></hudson.tasks.Shell></builders>\n` +
    "  <publishers/>\n  <buildWrappers/>\n</project>\n"
  );
}

async function main() {
  const JOB = "npm-job";
  const jenkins = new Jenkins({ baseUrl: url });

  const info = await jenkins.info();
  const names = info.jobs.map((j) => j.name);
  step(`info: jobs ${names}`);
  expect(names.includes("sample-job") && !names.includes(JOB), `jobs ${names}`);
  expect(
    info.jobs.every((j) => j.url.startsWith(`${url}/job/`)),
    `job urls are the proxy's: ${info.jobs.map((j) => j.url)}`
  );

  const v1 = freestyle("made by the npm client", "echo one: $GREETING");
  await jenkins.job.create(JOB, v1);
  step(`job.create ${JOB}`);
  expect(await jenkins.job.exists(JOB), "job.exists after job.create");
  try {
    await jenkins.job.create(JOB, v1);
    expect(false, "a second job.create must fail");
  } catch (err) {
    step(`job.create again: ${err.message}`);
    expect(
      // Jenkins' ‘…’ reach the client as ?…? (Latin-1 header), which it turns into "…".
      err.message.endsWith(`: A job already exists with the name "${JOB}"`),
      `the X-Error of a duplicate createItem: ${err.message}`
    );
  }
  expect((await jenkins.job.config(JOB)) === v1, "job.config returns the created XML");
  const v2 = v1.replace("echo one:", "echo two:");
  await jenkins.job.config(JOB, v2);
  step(`job.config ${JOB} (set)`);
  expect((await jenkins.job.config(JOB)) === v2, "job.config returns the new XML");

  await expireSessions();

  const queueId = await jenkins.job.build({
    name: JOB,
    parameters: { GREETING: "from npm" },
  });
  step(`job.build ${JOB}: queue item ${queueId}`);
  expect(Number.isInteger(queueId), `a queue id from Location: ${queueId}`);

  const item = await waitUntil("the queue item to leave the queue", async () => {
    const q = await jenkins.queue.item(queueId);
    return q.executable ? q : null;
  });
  const number = item.executable.number;
  expect(
    item.executable.url === `${url}/job/${JOB}/${number}/`,
    `the build's url is the proxy's: ${item.executable.url}`
  );
  step(`queue.item ${queueId}: build #${number}`);

  const build = await waitUntil("the build to finish", async () => {
    const b = await jenkins.build.get(JOB, number);
    return b.building ? null : b;
  });
  expect(build.result === "SUCCESS", `result ${build.result}`);

  // build.log POSTs to logText/progressiveText: a POST that only reads.
  const log = await jenkins.build.log(JOB, number);
  step(`build.log #${number}: ${log.length} characters`);
  for (const line of ["GREETING=from npm", "two: from npm", "Finished: SUCCESS"]) {
    expect(log.includes(line), `the log has ${line}:\n${log}`);
  }
  const meta = await jenkins.build.log(JOB, number, { start: 0, meta: true });
  expect(meta.text === log && !meta.more && Number(meta.size) > log.length,
    `progressive meta: size ${meta.size} (raw, console notes included), more ${meta.more}`);

  await jenkins.job.destroy(JOB);
  step(`job.destroy ${JOB}`);
  expect(!(await jenkins.job.exists(JOB)), "the job is gone");

  console.log(
    "@@result " +
      JSON.stringify({
        triggers: { [JOB]: 1 },
        builds: [{ job: JOB, number, queue_id: queueId, params: { GREETING: "from npm" } }],
        deleted: [JOB],
        configs: { [JOB]: v2 },
      })
  );
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err.stack || String(err));
    process.exit(1);
  }
);
