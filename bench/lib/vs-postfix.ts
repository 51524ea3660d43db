export async function runVsPostfix(_o: { messages: number; rounds: number; timeLimitMs: number; inner: boolean; log: (s: string) => void }): Promise<number> {
  return 2;
}
