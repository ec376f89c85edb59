/**
 * A Plane issue's description as the task's body: `description_html` → Markdown, one function for
 * every path (the webhook and the REST poll), so a task's body is the same whichever created it.
 *
 * Why `description_html` and not `description_stripped`: Plane's REST `IssueSerializer` excludes
 * `description_stripped` (apps/api/plane/api/serializers/issue.py: `exclude = ["description_json",
 * "description_stripped"]`); only the webhook's `IssueExpandSerializer` carries it. And the stripped
 * text is `strip_tags(description_html)` (apps/api/plane/utils/html_processor.py): text nodes
 * concatenated with no separator, so `<p>a</p><p>b</p>` is `ab`. The HTML is the one source both
 * paths have and the only one that keeps paragraphs and lists.
 *
 * The markup is Plane's tiptap editor (packages/editor): `<p class="editor-paragraph-block">`,
 * `<hN class="editor-heading-block">`, lists (`<li>` holding a `<p>`), task lists
 * (`<ul data-type="taskList">`, `<li data-type="taskItem" data-checked="true|false">`), code
 * blocks (`<pre><code class="language-x">`), tables, and empty custom elements
 * `<mention-component id entity_identifier entity_name>` and `<image-component src …>`.
 * Converted with turndown (ADR 0008); text is not Markdown-escaped: the body is read by agents
 * and people, and `snake_case` should stay `snake_case`, not `snake\_case`.
 */
import TurndownService from 'turndown';

type TNode = TurndownService.Node;
/** the part of a DOM element the rules read (turndown's parser is domino; no DOM types here) */
interface El {
  nodeName: string;
  children: ArrayLike<El>;
  parentNode: El | null;
  getAttribute(name: string): string | null;
  closest?(selector: string): El | null;
  querySelector(selector: string): El | null;
}

function attr(node: TNode, name: string): string | null {
  return (node as unknown as El).getAttribute?.(name) ?? null;
}

function parentList(node: TNode): { ordered: boolean; index: number; start: number } {
  const parent = (node as unknown as El).parentNode;
  const ordered = parent?.nodeName === 'OL';
  const siblings = parent ? Array.from(parent.children) : [];
  const start = Number(parent?.getAttribute('start') ?? '1');
  return { ordered, index: Math.max(0, siblings.indexOf(node as unknown as El)), start: Number.isFinite(start) ? start : 1 };
}

const ATTR = (name: string) => new RegExp(`\\b${name}\\s*=\\s*"([^"]*)"`, 'i');
const escapeText = (v: string) => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * Plane's mention and image elements are empty custom elements, which turndown would drop as
 * blank (and collapse the space after them): they become a text `@<entity_identifier>` and a
 * plain `<img>` first.
 */
function plainElements(html: string): string {
  return html
    .replace(/<mention-component\b([^>]*)>\s*(?:<\/mention-component>)?/gi, (_m, attrs: string) => {
      const id = ATTR('entity_identifier').exec(attrs)?.[1] ?? ATTR('id').exec(attrs)?.[1];
      return id ? `@${escapeText(id)}` : '';
    })
    .replace(/<image-component\b([^>]*)>\s*(?:<\/image-component>)?/gi, (_m, attrs: string) => {
      const src = ATTR('src').exec(attrs)?.[1];
      return src ? `<img src="${src}" alt="image">` : '';
    });
}

function build(): TurndownService {
  const t = new TurndownService({ headingStyle: 'atx', codeBlockStyle: 'fenced', bulletListMarker: '-', emDelimiter: '*', br: '' });
  t.escape = (s: string) => s;

  t.addRule('listItem', {
    filter: 'li',
    replacement(content, node) {
      const { ordered, index, start } = parentList(node);
      let prefix = ordered ? `${start + index}. ` : '- ';
      if (attr(node, 'data-type') === 'taskItem') prefix += attr(node, 'data-checked') === 'true' ? '[x] ' : '[ ] ';
      const body = content.replace(/^\n+/, '').replace(/\n+$/, '').replace(/\n/g, `\n${' '.repeat(ordered ? prefix.length : 2)}`);
      return `${prefix}${body}${node.nextSibling ? '\n' : ''}`;
    },
  });
  // the task item's checkbox is rendered by the list item itself
  t.addRule('taskCheckbox', { filter: (n) => n.nodeName === 'INPUT' || n.nodeName === 'LABEL', replacement: () => '' });

  t.addRule('tableCell', {
    filter: ['th', 'td'],
    replacement: (content) => ` ${content.replace(/\s*\n+\s*/g, ' ').trim().replace(/\|/g, '\\|')} |`,
  });
  t.addRule('tableRow', {
    filter: 'tr',
    replacement(content, node) {
      const row = `|${content}\n`;
      const el = node as unknown as El;
      const table = el.closest?.('table');
      const first = table?.querySelector('tr') === el;
      if (!first) return row;
      const cells = el.children.length;
      return `${row}|${' --- |'.repeat(Math.max(1, cells))}\n`;
    },
  });
  t.addRule('table', { filter: 'table', replacement: (content) => `\n\n${content.trim()}\n\n` });
  t.addRule('tableSection', { filter: ['thead', 'tbody', 'tfoot'], replacement: (content) => content });
  return t;
}

let service: TurndownService | null = null;

/** Plane HTML → Markdown (trimmed; runs of blank lines collapsed). */
export function planeHtmlToMarkdown(html: string): string {
  service ??= build();
  return service
    .turndown(plainElements(html))
    .split('\n')
    .map((l) => l.replace(/\s+$/, ''))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

/**
 * The body of a task made from a Plane issue: the Markdown of `description_html`; when an event
 * carries no HTML at all (an older payload), `description_stripped`; blank → null. Plane's empty
 * editor is `<p></p>` (the model's default), which is null here too.
 */
export function planeIssueBody(html: string | null | undefined, stripped?: string | null): string | null {
  if (typeof html === 'string' && html.trim() !== '') {
    const md = planeHtmlToMarkdown(html);
    return md === '' ? null : md;
  }
  if (typeof stripped === 'string' && stripped.trim() !== '') return stripped.trim();
  return null;
}
