import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';

/**
 * A freestyle job's config.xml as the double understands it (JENKINS-REST.md §4). The parsed tree is kept (order
 * preserved) so GET config.xml re-serialises it like Jenkins does (§3.6: XML 1.1 header, not the posted bytes),
 * with unknown builders, publishers, triggers and properties dropped like RobustCollectionConverter does.
 */
export type XNode = Record<string, unknown>;

const OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  parseTagValue: false,
  trimValues: false,
  processEntities: true,
  htmlEntities: true,
  cdataPropName: '#cdata',
  suppressEmptyNode: false,
  format: false,
} as const;
const parser = new XMLParser(OPTIONS);
const builder = new XMLBuilder(OPTIONS);

export interface ParamDef {
  name: string;
  type: 'string' | 'file';
  defaultValue: string;
  trim: boolean;
  description: string;
}
export interface JobConfig {
  tree: XNode[];
  description: string | null;
  disabled: boolean;
  label: string | null;
  quietPeriod: number | null;
  concurrentBuild: boolean;
  params: ParamDef[];
  timerSpecs: string[];
  builders: Array<{ command: string }>;
  archiver: { artifacts: string; allowEmpty: boolean; onlyIfSuccessful: boolean } | null;
}

export class ConfigError extends Error {}

const KNOWN: Record<string, ReadonlySet<string>> = {
  builders: new Set(['hudson.tasks.Shell']),
  publishers: new Set(['hudson.tasks.ArtifactArchiver']),
  triggers: new Set(['hudson.triggers.TimerTrigger']),
  properties: new Set(['hudson.model.ParametersDefinitionProperty', 'jenkins.model.BuildDiscarderProperty']),
};

const tagOf = (n: XNode) => Object.keys(n).find((k) => k !== ':@')!;
const children = (n: XNode) => n[tagOf(n)] as XNode[];
export function textOf(nodes: XNode[] | undefined): string {
  if (!nodes) return '';
  return nodes
    .map((n) =>
      typeof n['#text'] === 'string' ? n['#text'] : Array.isArray(n['#cdata']) ? textOf(n['#cdata'] as XNode[]) : '',
    )
    .join('');
}
const child = (nodes: XNode[] | undefined, tag: string) => nodes?.find((n) => tagOf(n) === tag);
const childText = (nodes: XNode[] | undefined, tag: string): string | null => {
  const c = child(nodes, tag);
  return c ? textOf(children(c)) : null;
};

/** A cron line Jenkins' CronTab would accept (5 fields of digits, H, *, ranges, steps, lists), or @-aliases. */
function validCronLine(line: string): boolean {
  if (/^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$/.test(line)) return true;
  const f = line.split(/\s+/);
  return (
    f.length === 5 &&
    f.every((x) =>
      /^(H(\([0-9]+-[0-9]+\))?|\*|[0-9]+(-[0-9]+)?)(\/[0-9]+)?(,(H|\*|[0-9]+(-[0-9]+)?)(\/[0-9]+)?)*$/.test(x),
    )
  );
}

/** A timer spec's cron lines: comments, blank lines and `TZ=` lines (a zone for the lines after it) left out. */
function cronLines(spec: string): string[] {
  return spec
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !/^TZ=[A-Za-z0-9_/+-]+$/.test(l));
}

/** Parses and normalises; throws ConfigError for what Jenkins answers 500 to (malformed XML, unknown root). */
export function parseConfig(xml: string): JobConfig {
  if (XMLValidator.validate(xml) !== true) throw new ConfigError('Failed to persist config.xml');
  const doc = (parser.parse(xml) as XNode[]).filter(
    (n) => !('?xml' in n) && !(typeof n['#text'] === 'string' && !(n['#text'] as string).trim()),
  );
  const root = doc.length === 1 ? doc[0]! : undefined;
  if (!root || tagOf(root) !== 'project')
    throw new ConfigError(`Unable to read config.xml: unknown root element ${root ? tagOf(root) : '(none)'}`);
  const top = children(root);
  for (const n of top) {
    const tag = tagOf(n);
    const known = KNOWN[tag];
    if (!known) continue;
    const kept = children(n).filter((c) => {
      const t = tagOf(c);
      if (t === '#text') return true;
      if (!known.has(t)) return false;
      if (t === 'hudson.triggers.TimerTrigger') {
        // Inferred in JENKINS-REST.md §4: an invalid spec makes the trigger fail to load, so it is dropped.
        // CronTabList.create: a `TZ=<zone>` line sets the zone of the lines after it.
        const lines = cronLines(childText(children(c), 'spec') ?? '');
        return lines.every(validCronLine);
      }
      return true;
    });
    n[tag] = kept;
  }
  return fromTree([root]);
}

function fromTree(tree: XNode[]): JobConfig {
  const top = children(tree[0]!);
  const props = children(child(top, 'properties') ?? { properties: [] });
  const pdp = child(props, 'hudson.model.ParametersDefinitionProperty');
  const defs = pdp ? children(child(children(pdp), 'parameterDefinitions') ?? { x: [] }) : [];
  const params: ParamDef[] = [];
  for (const d of defs) {
    const t = tagOf(d);
    if (t === 'hudson.model.StringParameterDefinition' || t === 'hudson.model.FileParameterDefinition') {
      const c = children(d);
      params.push({
        name: (childText(c, 'name') ?? '').trim(),
        type: t === 'hudson.model.StringParameterDefinition' ? 'string' : 'file',
        defaultValue: childText(c, 'defaultValue') ?? '',
        trim: childText(c, 'trim') === 'true',
        description: childText(c, 'description') ?? '',
      });
    }
  }
  const triggers = children(child(top, 'triggers') ?? { x: [] });
  const timerSpecs = triggers
    .filter((t) => tagOf(t) === 'hudson.triggers.TimerTrigger')
    .flatMap((t) => cronLines(childText(children(t), 'spec') ?? ''));
  const builders = children(child(top, 'builders') ?? { x: [] })
    .filter((b) => tagOf(b) === 'hudson.tasks.Shell')
    .map((b) => ({ command: childText(children(b), 'command') ?? '' }));
  const arch = child(children(child(top, 'publishers') ?? { x: [] }), 'hudson.tasks.ArtifactArchiver');
  const archiver = arch
    ? {
        artifacts: childText(children(arch), 'artifacts') ?? '',
        allowEmpty: childText(children(arch), 'allowEmptyArchive') === 'true',
        onlyIfSuccessful: childText(children(arch), 'onlyIfSuccessful') === 'true',
      }
    : null;
  const qp = childText(top, 'quietPeriod');
  return {
    tree,
    description: childText(top, 'description'),
    disabled: childText(top, 'disabled') === 'true',
    label: childText(top, 'assignedNode'),
    quietPeriod: qp !== null && /^[0-9]+$/.test(qp.trim()) ? Number(qp.trim()) : null,
    concurrentBuild: childText(top, 'concurrentBuild') === 'true',
    params,
    timerSpecs,
    builders,
    archiver,
  };
}

/** Sets <disabled> in the tree (adding it when missing) and returns the re-read config. */
export function withDisabled(cfg: JobConfig, disabled: boolean): JobConfig {
  const tree = structuredClone(cfg.tree);
  const top = children(tree[0]!);
  const d = child(top, 'disabled');
  if (d) d.disabled = [{ '#text': String(disabled) }];
  else top.push({ disabled: [{ '#text': String(disabled) }] });
  return fromTree(tree);
}

/** GET config.xml: re-serialised, XML 1.1 header like XStream2.toXMLUTF8. */
export function serialiseConfig(cfg: JobConfig): string {
  return `<?xml version='1.1' encoding='UTF-8'?>\n${builder.build(cfg.tree) as string}`;
}
