/**
 * Turns a stream of stdout chunks into complete lines: a line may span chunks, a chunk may hold
 * many lines, `\r\n` and `\n` both end a line, a multi-byte UTF-8 character split across two
 * Buffer chunks is decoded whole, and `end()` delivers a final line that has no newline.
 */
import { StringDecoder } from 'node:string_decoder';

export interface LineSplitter {
  push(chunk: string | Uint8Array): void;
  /** flush: the last line, when the stream ended without a newline */
  end(): void;
}

export function createLineSplitter(onLine: (line: string) => void): LineSplitter {
  const decoder = new StringDecoder('utf8');
  let partial = '';
  let ended = false;

  function drain(): void {
    let nl: number;
    while ((nl = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
    }
  }

  return {
    push(chunk) {
      if (ended) return;
      partial += typeof chunk === 'string' ? chunk : decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      drain();
    },
    end() {
      if (ended) return;
      ended = true;
      partial += decoder.end();
      drain();
      if (partial !== '') {
        const line = partial.endsWith('\r') ? partial.slice(0, -1) : partial;
        partial = '';
        onLine(line);
      }
    },
  };
}
