/** Avatars whose picture failed to load try again when the round changes:
 *  the link came back, and a picture the engine could not fetch offline
 *  (nor find in its disk cache) can be fetched now. */
export const pictureRetries = $state({ round: 0 });

/** The link is back: every avatar that failed tries once more. */
export function retryBrokenPictures(): void {
  pictureRetries.round += 1;
}
