-- AlterTable
ALTER TABLE "Account" ADD COLUMN "emailSkeleton" TEXT;

-- CreateIndex
CREATE UNIQUE INDEX "Account_emailSkeleton_key" ON "Account"("emailSkeleton");

