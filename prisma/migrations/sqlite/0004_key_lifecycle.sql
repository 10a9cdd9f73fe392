-- AlterTable
ALTER TABLE "SigningKey" ADD COLUMN "activateAt" DATETIME;
ALTER TABLE "SigningKey" ADD COLUMN "removeAt" DATETIME;

